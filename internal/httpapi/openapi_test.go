package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/droverhq/drover/internal/httpapi"
)

// designRoutes are the v1 routes of DESIGN.md section 4, the contract the
// document must describe: no more, no fewer.
var designRoutes = []string{
	"POST /v1/jobs",
	"POST /v1/jobs/batch",
	"GET /v1/jobs",
	"GET /v1/jobs/{id}",
	"POST /v1/jobs/{id}/cancel",
	"POST /v1/jobs/{id}/retry",
	"DELETE /v1/jobs/{id}",
	"POST /v1/lease",
	"POST /v1/jobs/{id}/heartbeat",
	"POST /v1/jobs/{id}/complete",
	"POST /v1/jobs/{id}/fail",
	"POST /v1/jobs/{id}/snooze",
	"GET /v1/queues",
	"POST /v1/queues/{name}/pause",
	"POST /v1/queues/{name}/resume",
}

// extraRoutes are the routes beyond DESIGN.md section 4 that the API
// serves on purpose.
var extraRoutes = []string{
	"POST /v1/tokens",
	"GET /v1/tokens",
	"DELETE /v1/tokens/{id}",
}

// operation is one documented operation.
type operation struct {
	method, path string
	op           *openapi3.Operation
}

func (o operation) route() string { return o.method + " " + o.path }

// operations lists the document's operations, sorted by route.
func operations(doc *openapi3.T) []operation {
	var out []operation
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			out = append(out, operation{method: method, path: path, op: op})
		}
	}
	slices.SortFunc(out, func(a, b operation) int { return strings.Compare(a.route(), b.route()) })
	return out
}

// TestOpenAPIDocumentIsValid loads /openapi.json with kin-openapi and
// validates it. kin-openapi v0.153 knows OpenAPI 3.1: Validate switches
// to the 3.1 rules (JSON Schema 2020-12 schemas, type arrays, webhooks)
// when the document says 3.1. It does not check the document against the
// official 3.1 meta-schema, so the version and a few structural facts are
// asserted here too.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do("GET", "/openapi.json", nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "json") {
		t.Errorf("Content-Type = %q, want JSON", ct)
	}
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false // the document must stand alone
	doc, err := loader.LoadFromData(r.body)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(loader.Context, openapi3.EnableMultiError()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1.") || !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	if doc.Info == nil || doc.Info.Title != "Drover" || doc.Info.Version == "" {
		t.Errorf("info = %+v, want title Drover and a version", doc.Info)
	}
	if _, ok := doc.Components.Schemas["Problem"]; !ok {
		t.Error("no Problem schema in components")
	}
}

func TestOpenAPIVersionFromOptions(t *testing.T) {
	t.Parallel()
	b := setupWith(t, config{api: httpapi.Options{Version: "1.2.3"}})
	if v := b.api.OpenAPI().Info.Version; v != "1.2.3" {
		t.Errorf("OpenAPI().Info.Version = %q", v)
	}
	if v := b.spec.doc.Info.Version; v != "1.2.3" {
		t.Errorf("served info.version = %q, want 1.2.3", v)
	}
}

func TestOpenAPIDocumentsTheDesignRoutes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var documented []string
	for _, o := range operations(b.spec.doc) {
		if strings.HasPrefix(o.path, "/v1/") {
			documented = append(documented, o.route())
		}
	}
	want := slices.Sorted(slices.Values(append(slices.Clone(designRoutes), extraRoutes...)))
	if !slices.Equal(documented, want) {
		t.Errorf("documented routes:\n%s\nwant (DESIGN.md section 4 and the token routes):\n%s", strings.Join(documented, "\n"), strings.Join(want, "\n"))
	}
}

func TestOpenAPIOperationsHaveIDAndSummary(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := map[string]string{}
	for _, o := range operations(b.spec.doc) {
		if o.op.OperationID == "" {
			t.Errorf("%s has no operationId", o.route())
		} else if other, dup := ids[o.op.OperationID]; dup {
			t.Errorf("%s and %s share operationId %q", o.route(), other, o.op.OperationID)
		}
		ids[o.op.OperationID] = o.route()
		if strings.TrimSpace(o.op.Summary) == "" {
			t.Errorf("%s has no summary", o.route())
		}
		if len(o.op.Tags) == 0 {
			t.Errorf("%s has no tag", o.route())
		}
	}
}

// probePaths are request paths under /v1 to ask the mux about: the
// documented routes with their parameters filled in, and neighbours where
// an undocumented route would most likely sit.
var probePaths = []string{
	"/v1", "/v1/", "/v1/jobs/", "/v1/jobs/1/", "/v1/jobs/1/events", "/v1/jobs/1/output",
	"/v1/jobs/1/lease", "/v1/jobs/1/release", "/v1/jobs/1/1", "/v1/jobs/batch/1", "/v1/jobs/search",
	"/v1/lease/1", "/v1/leases", "/v1/queues/", "/v1/queues/q", "/v1/queues/q/jobs", "/v1/queues/q/delete",
	"/v1/stats", "/v1/events", "/v1/workers", "/v1/health", "/v1/openapi.json",
}

var probeMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

// TestEveryMuxRouteIsDocumented asks the mux, for every method and many
// paths under /v1, which pattern would serve the request (ServeMux cannot
// list its patterns), and checks that every such pattern is a documented
// operation.
func TestEveryMuxRouteIsDocumented(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sp := b.spec
	documented := map[string]bool{}
	paths := slices.Clone(probePaths)
	for _, o := range operations(sp.doc) {
		documented[o.route()] = true
		paths = append(paths, fillParams(o.path, "1", "q"))
	}
	served := map[string]bool{}
	for _, p := range paths {
		for _, m := range probeMethods {
			_, pattern := b.mux.Handler(httptest.NewRequest(m, p, nil))
			// "/v1/" is the catch-all that answers unmatched requests
			// with 404 or 405 problems (TestUnmatchedRoutesAnswerWithProblems).
			if pattern == "" || pattern == "/v1/" || !strings.Contains(pattern, "/v1") {
				continue
			}
			served[pattern] = true
			if !documented[pattern] {
				t.Errorf("%s %s is served by %q, which is not in the document", m, p, pattern)
			}
		}
	}
	for route := range documented {
		if strings.HasPrefix(strings.SplitN(route, " ", 2)[1], "/v1/") && !served[route] {
			t.Errorf("no probe reached documented route %s", route)
		}
	}
}

// fillParams replaces {id} and {name} in a documented path.
func fillParams(path, id, name string) string {
	return strings.NewReplacer("{id}", id, "{name}", name).Replace(path)
}

// TestEveryDocumentedOperationIsServed calls each documented operation
// with inputs that must fail, and checks that the API itself answers
// (problem details with a documented status), not the mux's plain-text
// 404 or 405 for a route that is not there. Every response is also
// checked against the document by do.
func TestEveryDocumentedOperationIsServed(t *testing.T) {
	t.Parallel()
	b := setupWith(t, config{api: httpapi.Options{MaxBodyBytes: 4096}})
	sp := b.spec
	// Over MaxBodyBytes and over huma's default limit of 1 MiB, for the
	// operations that keep the default.
	huge := `{"x":"` + strings.Repeat("a", 1<<20) + `"}`
	for _, o := range operations(sp.doc) {
		if !strings.HasPrefix(o.path, "/v1/") {
			continue
		}
		t.Run(o.route(), func(t *testing.T) {
			t.Parallel()
			b := b.withT(t)
			path := fillParams(o.path, "987654", "probe")
			if _, pattern := b.mux.Handler(httptest.NewRequest(o.method, path, nil)); pattern != o.route() {
				t.Errorf("the mux serves %s %s with %q, want %q", o.method, path, pattern, o.route())
			}
			served := func(r *response) {
				t.Helper()
				if ct := r.header.Get("Content-Type"); ct != "application/json" && ct != "application/problem+json" {
					t.Errorf("%s %s answered %s", o.method, path, r)
				}
			}
			hasBody := o.op.RequestBody != nil
			if !hasBody {
				r := b.do(o.method, path, nil)
				served(r)
				if strings.Contains(o.path, "{id}") {
					wantProblem(t, r, http.StatusNotFound, "not_found")
				}
			} else {
				r := b.do(o.method, path, `{"`)
				served(r)
				wantProblem(t, r, http.StatusBadRequest, "invalid_argument")
				r = b.doCT(o.method, path, "text/plain", `{}`)
				served(r)
				wantProblem(t, r, http.StatusUnsupportedMediaType, "invalid_argument")
				r = b.do(o.method, path, huge)
				served(r)
				wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
			}
			if strings.Contains(o.path, "{") {
				bad := fillParams(o.path, "0", "bad%20name")
				var body any
				if hasBody {
					body = `{}`
				}
				r := b.do(o.method, bad, body)
				served(r)
				p := wantProblem(t, r, http.StatusUnprocessableEntity, "invalid_argument")
				wantLocation(t, p, "path."+strings.Trim(o.path[strings.Index(o.path, "{"):strings.Index(o.path, "}")+1], "{}"))
			}
		})
	}
}

// TestResponseValidationCatchesMismatch makes sure that the check every
// test relies on, validateResponse, can fail.
func TestResponseValidationCatchesMismatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(map[string]any{"kind": "k"}).ID
	good := b.do("GET", jobPath(id, ""), nil)
	for _, tc := range []struct {
		name   string
		status int
		body   string
	}{
		{"unknown state", http.StatusOK, strings.Replace(string(good.body), `"available"`, `"sleeping"`, 1)},
		{"id a string", http.StatusOK, strings.Replace(string(good.body), `"id":1`, `"id":"1"`, 1)},
		{"undocumented status", http.StatusTeapot, string(good.body)},
	} {
		bad := *good
		bad.status, bad.body = tc.status, []byte(tc.body)
		if err := b.validateResponse(&bad); err == nil {
			t.Errorf("%s: validateResponse accepted %s", tc.name, bad.body)
		}
	}
	if err := b.validateResponse(good); err != nil {
		t.Errorf("validateResponse refused a real response: %v", err)
	}
}
