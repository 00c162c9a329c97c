// Drover's GraphQL query page: an editor, variables, a token, the result,
// and a schema explorer built from introspection. Everything it loads
// comes from the server that served it.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const endpoint = "/graphql";
  const store = window.sessionStorage;

  for (const id of ["query", "variables", "token"]) {
    const saved = store.getItem("drover.graphql." + id);
    if (saved !== null) $(id).value = saved;
    $(id).addEventListener("input", () => store.setItem("drover.graphql." + id, $(id).value));
  }

  async function post(query, variables) {
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    const token = $("token").value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    const res = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    const text = await res.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      return { errors: [{ message: "HTTP " + res.status + ": " + text }] };
    }
  }

  function show(obj) {
    const out = $("result");
    out.textContent = JSON.stringify(obj, null, 2);
    out.classList.toggle("error", Boolean(obj && obj.errors));
  }

  async function run() {
    let variables = {};
    const raw = $("variables").value.trim();
    if (raw) {
      try {
        variables = JSON.parse(raw);
      } catch (e) {
        show({ errors: [{ message: "the variables are not JSON: " + e.message }] });
        return;
      }
    }
    $("result").textContent = "…";
    try {
      show(await post($("query").value, variables));
    } catch (e) {
      show({ errors: [{ message: String(e) }] });
    }
  }

  const introspection = `query Schema {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types {
      name kind description
      fields { name description args { name type { ...T } } type { ...T } }
      inputFields { name description type { ...T } }
      enumValues { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }`;

  function typeName(t) {
    if (!t) return "";
    if (t.kind === "NON_NULL") return typeName(t.ofType) + "!";
    if (t.kind === "LIST") return "[" + typeName(t.ofType) + "]";
    return t.name;
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  let types = [];

  function render() {
    const filter = $("filter").value.trim().toLowerCase();
    const root = $("schema");
    root.replaceChildren();
    for (const t of types) {
      const members = (t.fields || t.inputFields || []).map((f) => ({
        name: f.name,
        sig: f.name + (f.args && f.args.length ? "(" + f.args.map((a) => a.name + ": " + typeName(a.type)).join(", ") + ")" : "") + ": " + typeName(f.type),
        desc: f.description,
      })).concat((t.enumValues || []).map((v) => ({ name: v.name, sig: v.name })));
      const match = !filter || t.name.toLowerCase().includes(filter) || members.some((m) => m.sig.toLowerCase().includes(filter));
      if (!match) continue;
      const d = el("details");
      if (filter || ["Query", "Mutation", "Subscription"].includes(t.name)) d.open = true;
      d.append(el("summary", "", t.name + " (" + t.kind.toLowerCase().replace("_", " ") + ")"));
      if (t.description) d.append(el("div", "desc", t.description));
      for (const m of members) {
        d.append(el("div", "field", m.sig));
        if (m.desc) d.append(el("div", "desc", m.desc));
      }
      root.append(d);
    }
  }

  async function loadSchema() {
    try {
      const res = await post(introspection, {});
      if (res.errors) {
        show(res);
        return;
      }
      types = res.data.__schema.types.filter((t) => !t.name.startsWith("__"));
      // The roots first, then the other types by name.
      const roots = ["Query", "Mutation", "Subscription"];
      const rank = (t) => (roots.includes(t.name) ? roots.indexOf(t.name) : roots.length);
      types.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
      render();
    } catch (e) {
      show({ errors: [{ message: String(e) }] });
    }
  }

  $("run").addEventListener("click", run);
  $("load-schema").addEventListener("click", loadSchema);
  $("filter").addEventListener("input", render);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  loadSchema();
})();
