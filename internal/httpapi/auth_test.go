package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// authServer serves the API behind the Authenticator on a fresh store and
// returns its URL, the store, and a token per scope.
func authServer(t *testing.T) (string, store.Store, map[string]string) {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tokens := map[string]string{}
	for _, sc := range auth.Scopes {
		secret, hash, err := auth.New()
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.CreateToken(t.Context(), store.CreateTokenParams{Now: time.Now(), Name: string(sc), Scope: string(sc), Hash: hash})
		if err != nil {
			t.Fatal(err)
		}
		tokens[string(sc)] = auth.Format(rec.ID, secret)
	}
	eng, err := engine.New(engine.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{})
	srv := httptest.NewServer(httpapi.NewAuthenticator(st).Wrap(mux))
	t.Cleanup(srv.Close)
	return srv.URL, st, tokens
}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// restScopes is the scope each REST operation needs: the single table of
// who may call what (docs/operations.md, "Scopes", says the same in
// words). authtest.Public marks what needs no token. TestRESTScopeMatrix
// fails when the served OpenAPI document has an operation this table
// lacks, or the other way round.
var restScopes = map[string]auth.Scope{
	"POST /v1/jobs":                 auth.ScopeProducer,
	"POST /v1/jobs/batch":           auth.ScopeProducer,
	"GET /v1/jobs":                  auth.ScopeRead,
	"GET /v1/jobs/{id}":             auth.ScopeRead,
	"POST /v1/jobs/{id}/cancel":     auth.ScopeAdmin,
	"POST /v1/jobs/{id}/retry":      auth.ScopeAdmin,
	"DELETE /v1/jobs/{id}":          auth.ScopeAdmin,
	"POST /v1/lease":                auth.ScopeWorker,
	"POST /v1/jobs/{id}/heartbeat":  auth.ScopeWorker,
	"POST /v1/jobs/{id}/complete":   auth.ScopeWorker,
	"POST /v1/jobs/{id}/fail":       auth.ScopeWorker,
	"POST /v1/jobs/{id}/snooze":     auth.ScopeWorker,
	"GET /v1/queues":                auth.ScopeRead,
	"POST /v1/queues/{name}/pause":  auth.ScopeAdmin,
	"POST /v1/queues/{name}/resume": auth.ScopeAdmin,
	"GET /v1/tokens":                auth.ScopeAdmin,
	"POST /v1/tokens":               auth.ScopeAdmin,
	"DELETE /v1/tokens/{id}":        auth.ScopeAdmin,
	// Served beside the operations, outside the document.
	"GET /openapi.json": authtest.Public,
	"GET /openapi.yaml": authtest.Public,
	"GET /docs":         authtest.Public,
}

// restOutsideDocument are the routes the REST face serves that its
// OpenAPI document does not list.
var restOutsideDocument = []string{"GET /openapi.json", "GET /openapi.yaml", "GET /docs"}

// TestRESTScopeMatrix calls every REST operation that the served OpenAPI
// document lists (and the routes served beside it) with every kind of
// caller: no token, a malformed one, a wrong secret, an unknown id, a
// revoked token, and a token of each scope. It checks 401 for every
// caller without a valid token, 403 for a scope that does not allow the
// call, and for every other caller an answer from the handler itself,
// one that the document lists for the operation. The required scopes
// come from restScopes alone, and a route missing there fails the test.
//
// Calls carry ids and names that match nothing and an empty JSON body,
// so that an allowed call is answered (404 or 422) without changing
// anything, and the same server serves every call.
func TestRESTScopeMatrix(t *testing.T) {
	t.Parallel()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	creds := authtest.NewCredentials(t, st)
	eng, err := engine.New(engine.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{})
	srv := httptest.NewServer(httpapi.NewAuthenticator(st).Wrap(mux))
	t.Cleanup(srv.Close)

	// The routes come from the document the server serves.
	code, raw := call(t, "GET", srv.URL+"/openapi.json", "", "")
	if code != 200 {
		t.Fatalf("GET /openapi.json: %d", code)
	}
	doc, err := openapi3.NewLoader().LoadFromData([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	var endpoints []authtest.Endpoint
	for _, o := range operations(doc) {
		endpoints = append(endpoints, restEndpoint(srv.URL, o.method, o.path, documented(o.op)))
	}
	if len(endpoints) < 15 {
		t.Fatalf("the document lists %d operations; the v1 contract alone has 15", len(endpoints))
	}
	for _, route := range restOutsideDocument {
		method, path, _ := strings.Cut(route, " ")
		endpoints = append(endpoints, restEndpoint(srv.URL, method, path, nil))
	}
	n := authtest.Check(t, endpoints, restScopes, creds)
	t.Logf("%d routes × %d callers: %d calls checked", len(endpoints), len(creds), n)
}

// documented returns the statuses an operation's document lists.
func documented(op *openapi3.Operation) map[int]bool {
	out := map[int]bool{}
	for code := range op.Responses.Map() {
		if n, err := strconv.Atoi(code); err == nil {
			out[n] = true
		}
	}
	return out
}

// restEndpoint is the REST operation method path on the server at base.
// Path parameters are filled with values that match nothing. When
// statuses is not nil, an allowed call must answer one of them.
func restEndpoint(base, method, path string, statuses map[int]bool) authtest.Endpoint {
	target := strings.NewReplacer("{id}", "424242", "{name}", "authtest-nothing").Replace(path)
	return authtest.Endpoint{
		Name: method + " " + path,
		Call: func(ctx context.Context, bearer string) (authtest.Outcome, string, error) {
			var body io.Reader
			if method == http.MethodPost {
				body = strings.NewReader("{}")
			}
			req, err := http.NewRequestWithContext(ctx, method, base+target, body)
			if err != nil {
				return "", "", err
			}
			if body != nil {
				req.Header.Set("Content-Type", "application/json")
			}
			if bearer != "" {
				req.Header.Set("Authorization", "Bearer "+bearer)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return "", "", err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			answer := fmt.Sprintf("%d %s", resp.StatusCode, b)
			switch resp.StatusCode {
			case http.StatusUnauthorized:
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") || !strings.Contains(string(b), `"code":"unauthorized"`) {
					return "", "", fmt.Errorf("a 401 without the challenge or the code: %s %v", answer, resp.Header)
				}
				return authtest.Unauthenticated, answer, nil
			case http.StatusForbidden:
				if !strings.Contains(string(b), `"code":"forbidden"`) {
					return "", "", fmt.Errorf("a 403 without the code: %s", answer)
				}
				return authtest.Forbidden, answer, nil
			}
			if statuses != nil && !statuses[resp.StatusCode] {
				return "", "", fmt.Errorf("answered %s, a status the document does not list for it", answer)
			}
			return authtest.Allowed, answer, nil
		},
	}
}

// TestAuthProblemBodies checks the refusals' shape: problem details with
// codes unauthorized and forbidden, and a WWW-Authenticate challenge.
func TestAuthProblemBodies(t *testing.T) {
	t.Parallel()
	base, _, tokens := authServer(t)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/v1/queues", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Code   string `json:"code"`
		Status int    `json:"status"`
	}
	json.NewDecoder(resp.Body).Decode(&p) //nolint:errcheck // checked below
	resp.Body.Close()
	if resp.StatusCode != 401 || p.Code != "unauthorized" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("401: %d %+v %q", resp.StatusCode, p, resp.Header.Get("WWW-Authenticate"))
	}
	code, body := call(t, "POST", base+"/v1/queues/q/pause", tokens["read"], "")
	if code != 403 || !strings.Contains(body, `"code":"forbidden"`) || !strings.Contains(body, "admin") {
		t.Fatalf("403: %d %s", code, body)
	}
	// Health and the API document need no token.
	for _, path := range []string{"/openapi.json", "/docs"} {
		if code, _ := call(t, "GET", base+path, "", ""); code != 200 {
			t.Fatalf("%s without a token: %d", path, code)
		}
	}
}

// TestOpenUntilFirstToken checks that a store without tokens serves the
// API openly and that creating one turns the check on for good.
func TestOpenUntilFirstToken(t *testing.T) {
	t.Parallel()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	a := httpapi.NewAuthenticator(st)
	on, err := a.Enforced(t.Context())
	if err != nil || on {
		t.Fatalf("fresh store: enforced %v, %v", on, err)
	}
	eng, _ := engine.New(engine.Config{Store: st})
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{})
	srv := httptest.NewServer(a.Wrap(mux))
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/jobs", "application/json", bytes.NewReader([]byte(`{"kind":"k"}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("open API refused: %d", resp.StatusCode)
	}
	_, hash, _ := auth.New()
	if _, err := st.CreateToken(t.Context(), store.CreateTokenParams{Now: time.Now(), Name: "x", Scope: "read", Hash: hash}); err != nil {
		t.Fatal(err)
	}
	fresh := httpapi.NewAuthenticator(st)
	if on, err := fresh.Enforced(t.Context()); err != nil || !on {
		t.Fatalf("after a token: enforced %v, %v", on, err)
	}
}

func TestNeededScope(t *testing.T) {
	t.Parallel()
	cases := map[string]auth.Scope{
		"GET /v1/jobs":               auth.ScopeRead,
		"GET /v1/jobs/7":             auth.ScopeRead,
		"POST /v1/jobs":              auth.ScopeProducer,
		"POST /v1/jobs/batch":        auth.ScopeProducer,
		"POST /v1/lease":             auth.ScopeWorker,
		"POST /v1/jobs/7/heartbeat":  auth.ScopeWorker,
		"POST /v1/jobs/7/complete":   auth.ScopeWorker,
		"POST /v1/jobs/7/fail":       auth.ScopeWorker,
		"POST /v1/jobs/7/snooze":     auth.ScopeWorker,
		"POST /v1/jobs/7/cancel":     auth.ScopeAdmin,
		"POST /v1/jobs/7/retry":      auth.ScopeAdmin,
		"DELETE /v1/jobs/7":          auth.ScopeAdmin,
		"POST /v1/queues/q/pause":    auth.ScopeAdmin,
		"POST /v1/something/unknown": auth.ScopeAdmin,
		"PUT /v1/jobs":               auth.ScopeAdmin,
	}
	for call, want := range cases {
		method, path, _ := strings.Cut(call, " ")
		if got := httpapi.NeededScope(method, path); got != want {
			t.Errorf("NeededScope(%s) = %s, want %s", call, got, want)
		}
	}
}

// TestProducersReadTheirOwnJobs checks that a producer token sees only
// the jobs it enqueued (another's are not found, not forbidden), that
// other scopes see all of them, that jobs record their creator, and that
// idempotency keys are per token.
func TestProducersReadTheirOwnJobs(t *testing.T) {
	t.Parallel()
	base, st, tokens := authServer(t)
	secret, hash, _ := auth.New()
	rec, err := st.CreateToken(t.Context(), store.CreateTokenParams{Now: time.Now(), Name: "other", Scope: "producer", Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	other := auth.Format(rec.ID, secret)
	mineID, _, _ := auth.Parse(tokens["producer"])

	code, body := call(t, "POST", base+"/v1/jobs", tokens["producer"], `{"kind":"mine"}`)
	if code != 201 || !strings.Contains(body, `"created_by":"token:`+strconv.FormatInt(mineID, 10)+`"`) {
		t.Fatalf("enqueue: %d %s", code, body)
	}
	if code, _ := call(t, "POST", base+"/v1/jobs", other, `{"kind":"theirs"}`); code != 201 {
		t.Fatalf("other enqueue: %d", code)
	}
	if code, _ := call(t, "GET", base+"/v1/jobs/2", tokens["producer"], ""); code != 404 {
		t.Fatalf("producer reading another's job: %d, want 404", code)
	}
	if code, _ := call(t, "GET", base+"/v1/jobs/1", tokens["producer"], ""); code != 200 {
		t.Fatalf("producer reading its own job: %d", code)
	}
	_, list := call(t, "GET", base+"/v1/jobs", tokens["producer"], "")
	if !strings.Contains(list, `"kind":"mine"`) || strings.Contains(list, `"kind":"theirs"`) {
		t.Fatalf("producer's list: %s", list)
	}
	for _, who := range []string{"read", "admin", "worker"} {
		_, list := call(t, "GET", base+"/v1/jobs", tokens[who], "")
		if !strings.Contains(list, `"kind":"mine"`) || !strings.Contains(list, `"kind":"theirs"`) {
			t.Fatalf("%s's list: %s", who, list)
		}
	}
	// The same key from two tokens is two requests.
	for _, tok := range []string{tokens["producer"], other} {
		req, _ := http.NewRequestWithContext(t.Context(), "POST", base+"/v1/jobs", strings.NewReader(`{"kind":"k"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Idempotency-Key", "shared")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("key shared across tokens: %d, want 201 for each", resp.StatusCode)
		}
	}
}

// TestTokensThroughTheAPI creates, lists and revokes tokens with an admin
// token while the server runs, and checks that only admin may.
func TestTokensThroughTheAPI(t *testing.T) {
	t.Parallel()
	base, st, tokens := authServer(t)
	code, body := call(t, "POST", base+"/v1/tokens", tokens["admin"], `{"scope":"worker","name":"py"}`)
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	var created struct {
		ID    int64  `json:"id"`
		Scope string `json:"scope"`
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(body), &created); err != nil || created.Scope != "worker" || !strings.HasPrefix(created.Token, "drv_") {
		t.Fatalf("create reply %s: %v", body, err)
	}
	// The new token works at once, with its scope.
	if code, _ := call(t, "POST", base+"/v1/lease", created.Token, `{"queues":["q"]}`); code != 200 {
		t.Fatalf("lease with the new token: %d", code)
	}
	if code, _ := call(t, "POST", base+"/v1/jobs", created.Token, `{"kind":"k"}`); code != 403 {
		t.Fatalf("enqueue with a worker token: %d, want 403", code)
	}
	// Listing never shows a secret.
	code, list := call(t, "GET", base+"/v1/tokens", tokens["admin"], "")
	_, secret, _ := auth.Parse(created.Token)
	if code != 200 || !strings.Contains(list, `"name":"py"`) || strings.Contains(list, secret) || strings.Contains(list, `"token":`) {
		t.Fatalf("list: %d %s", code, list)
	}
	// Only admin manages tokens, even for reading.
	for _, who := range []string{"producer", "worker", "read"} {
		if code, _ := call(t, "GET", base+"/v1/tokens", tokens[who], ""); code != 403 {
			t.Fatalf("%s listing tokens: %d, want 403", who, code)
		}
		if code, _ := call(t, "POST", base+"/v1/tokens", tokens[who], `{"scope":"admin"}`); code != 403 {
			t.Fatalf("%s creating a token: %d, want 403", who, code)
		}
	}
	if code, _ := call(t, "POST", base+"/v1/tokens", tokens["admin"], `{"scope":"root"}`); code != 422 {
		t.Fatalf("unknown scope: %d, want 422", code)
	}
	if code, _ := call(t, "DELETE", base+"/v1/tokens/"+strconv.FormatInt(created.ID, 10), tokens["admin"], ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := call(t, "DELETE", base+"/v1/tokens/424242", tokens["admin"], ""); code != 404 {
		t.Fatalf("revoke of an unknown token: %d, want 404", code)
	}
	rec, err := st.GetToken(t.Context(), created.ID)
	if err != nil || rec.RevokedAt == nil {
		t.Fatalf("after revoke: %+v, %v", rec, err)
	}
	// A server that has not cached the token refuses it at once.
	eng, _ := engine.New(engine.Config{Store: st})
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{})
	fresh := httptest.NewServer(httpapi.NewAuthenticator(st).Wrap(mux))
	defer fresh.Close()
	if code, _ := call(t, "POST", fresh.URL+"/v1/lease", created.Token, `{"queues":["q"]}`); code != 401 {
		t.Fatalf("revoked token on a fresh server: %d, want 401", code)
	}
}
