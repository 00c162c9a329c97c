package httpapi_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/auth"
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

// TestEveryRouteAgainstEveryScope calls every /v1 route with every scope,
// no token, a wrong secret and a revoked token, and checks who may call
// what: 401 without a valid token, 403 with one that lacks the scope, and
// otherwise an answer from the handler itself.
func TestEveryRouteAgainstEveryScope(t *testing.T) {
	t.Parallel()
	base, st, tokens := authServer(t)
	// A job to address, enqueued with the admin token.
	if code, body := call(t, "POST", base+"/v1/jobs", tokens["admin"], `{"kind":"k"}`); code != 201 {
		t.Fatalf("setup enqueue: %d %s", code, body)
	}
	routes := []struct {
		method, path, body string
		need               string
	}{
		{"POST", "/v1/jobs", `{"kind":"k"}`, "producer"},
		{"POST", "/v1/jobs/batch", `{"jobs":[{"kind":"k"}]}`, "producer"},
		{"GET", "/v1/jobs", "", "read"},
		{"GET", "/v1/jobs/1", "", "read"},
		{"POST", "/v1/jobs/1/cancel", "", "admin"},
		{"POST", "/v1/jobs/1/retry", "", "admin"},
		{"DELETE", "/v1/jobs/424242", "", "admin"},
		{"POST", "/v1/lease", `{"queues":["none"]}`, "worker"},
		{"POST", "/v1/jobs/1/heartbeat", `{"lease_token":"x"}`, "worker"},
		{"POST", "/v1/jobs/1/complete", `{"lease_token":"x"}`, "worker"},
		{"POST", "/v1/jobs/1/fail", `{"lease_token":"x","error":"e"}`, "worker"},
		{"POST", "/v1/jobs/1/snooze", `{"lease_token":"x","delay":"1s"}`, "worker"},
		{"GET", "/v1/queues", "", "read"},
		{"POST", "/v1/queues/q/pause", "", "admin"},
		{"POST", "/v1/queues/q/resume", "", "admin"},
		{"GET", "/v1/tokens", "", "admin"},
		{"POST", "/v1/tokens", `{"scope":"read"}`, "admin"},
		{"DELETE", "/v1/tokens/424242", "", "admin"},
	}
	// The revoked token is a copy of admin's that we then revoke.
	secret, hash, _ := auth.New()
	rec, err := st.CreateToken(t.Context(), store.CreateTokenParams{Now: time.Now(), Name: "old", Scope: "admin", Hash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.RevokeToken(t.Context(), store.RevokeTokenParams{Now: time.Now(), ID: rec.ID}); err != nil {
		t.Fatal(err)
	}
	revoked := auth.Format(rec.ID, secret)
	id, _, _ := auth.Parse(tokens["admin"])
	wrong := auth.Format(id, "not-the-secret")

	for _, r := range routes {
		for _, who := range []string{"admin", "producer", "worker", "read", "none", "wrong", "revoked", "garbage"} {
			token := tokens[who]
			switch who {
			case "none":
				token = ""
			case "wrong":
				token = wrong
			case "revoked":
				token = revoked
			case "garbage":
				token = "hunter2"
			}
			code, body := call(t, r.method, base+r.path, token, r.body)
			var want string
			switch {
			case token == "" || who == "wrong" || who == "revoked" || who == "garbage":
				want = "401"
			case auth.Scope(who).Allows(auth.Scope(r.need)):
				want = "handled"
			default:
				want = "403"
			}
			got := "handled"
			if code == 401 || code == 403 {
				got = map[int]string{401: "401", 403: "403"}[code]
			}
			if got != want {
				t.Errorf("%s %s as %s: %d %s, want %s", r.method, r.path, who, code, body, want)
			}
		}
	}
	if code, _ := call(t, "GET", base+"/v1/queues", "", ""); code != 401 {
		t.Fatalf("no token: %d", code)
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
