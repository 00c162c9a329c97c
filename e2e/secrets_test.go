package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/auth"
)

// TestTokenSecretsStayOutOfLogsAndStorage runs a full token and request
// cycle against drover serve at debug level, on the embedded store and on
// PostgreSQL: an admin token made with `drover token create`, more tokens
// made through the API, authenticated enqueues, leases and completes,
// and refused calls (no token, a malformed one, a wrong secret, an
// unknown id, a revoked token, a missing scope, a Basic header). It then
// checks that no token secret, no Authorization header value and no lease
// token appears in what the server wrote (stdout and stderr), and that
// the store holds each token's SHA-256 hash and never its secret: every
// file of the data directory, or every row of the tokens table.
func TestTokenSecretsStayOutOfLogsAndStorage(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	for _, backend := range []string{"embedded", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			secretsCycle(t, backend)
		})
	}
}

func secretsCycle(t *testing.T, backend string) {
	s := ptStore(t, backend)
	code, stdout, stderr := run(t, s.env, append([]string{"token", "create", "--scope", "admin", "--name", "ops"}, s.storeArgs...)...)
	if code != 0 {
		t.Fatalf("drover token create: status %d, stderr:\n%s", code, stderr)
	}
	admin := strings.TrimSpace(stdout)
	tokens := map[string]string{"admin": admin}
	s.serve(t, "--log-level", "debug")

	call := func(method, path, bearer string, body any) ptAnswer {
		t.Helper()
		h := http.Header{}
		if bearer != "" {
			h.Set("Authorization", bearer)
		}
		a, err := ptCall(t.Context(), ptDirect, method, s.base+path, body, h)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return a
	}
	for _, scope := range []string{"producer", "worker", "read"} {
		a := call(http.MethodPost, "/v1/tokens", "Bearer "+admin, map[string]string{"scope": scope, "name": scope})
		var created struct {
			Token string `json:"token"`
		}
		if a.status != http.StatusCreated {
			t.Fatalf("create a %s token: %d %s", scope, a.status, a.body)
		}
		a.decode(t, &created)
		tokens[scope] = created.Token
	}

	// Authenticated work: a delayed job (its promotion logs at debug
	// level), a job leased and completed.
	want := func(a ptAnswer, status int, what string) {
		t.Helper()
		if a.status != status {
			t.Fatalf("%s: %d %s, want %d", what, a.status, a.body, status)
		}
	}
	want(call(http.MethodPost, "/v1/jobs", "Bearer "+tokens["producer"], map[string]any{"kind": "s", "queue": "later", "delay": "1s"}), 201, "delayed enqueue")
	want(call(http.MethodPost, "/v1/jobs", "Bearer "+tokens["producer"], map[string]any{"kind": "s", "queue": "now", "args": map[string]int{"n": 1}}), 201, "enqueue")
	var leased struct {
		Jobs []ptLeased `json:"jobs"`
	}
	call(http.MethodPost, "/v1/lease", "Bearer "+tokens["worker"], map[string]any{"queues": []string{"now"}, "wait": "5s"}).decode(t, &leased)
	if len(leased.Jobs) != 1 {
		t.Fatalf("leased %+v, want one job", leased.Jobs)
	}
	leaseToken := leased.Jobs[0].LeaseToken
	want(call(http.MethodPost, fmt.Sprintf("/v1/jobs/%d/complete", leased.Jobs[0].ID), "Bearer "+tokens["worker"],
		map[string]any{"lease_token": leaseToken}), 200, "complete")
	want(call(http.MethodGet, "/v1/jobs", "Bearer "+tokens["read"], nil), 200, "list")

	// Refusals.
	adminID, _, err := auth.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	wrong := auth.Format(adminID, strings.Repeat("w", 43))
	unknown := auth.Format(adminID+999, strings.Repeat("u", 43))
	refused := []struct {
		bearer string
		status int
	}{
		{"", 401},
		{"Bearer drv_1_x-not-a-real-secret", 401},
		{"Bearer " + wrong, 401},
		{"Bearer " + unknown, 401},
		{"Basic " + admin, 401},
		{"Bearer " + tokens["read"], 403}, // an enqueue needs producer
	}
	for _, r := range refused {
		want(call(http.MethodPost, "/v1/jobs", r.bearer, map[string]any{"kind": "s"}), r.status, "refused enqueue")
	}
	tokens["wrong"], tokens["unknown"] = wrong, unknown
	// Revoke the read token; a fresh server refuses it at once.
	readID, _, _ := auth.Parse(tokens["read"])
	want(call(http.MethodDelete, fmt.Sprintf("/v1/tokens/%d", readID), "Bearer "+admin, nil), 204, "revoke")
	// A malformed body from a valid token, so that the problem path runs.
	want(call(http.MethodPost, "/v1/jobs", "Bearer "+tokens["producer"], map[string]any{"kind": ""}), 422, "invalid enqueue")

	// The delayed job's promotion is logged at debug level: wait for it,
	// so that the log is known to hold debug records.
	deadline := time.After(30 * time.Second)
	for !strings.Contains(s.p.stderr.String(), `"level":"DEBUG"`) {
		select {
		case <-deadline:
			t.Fatalf("no debug record within 30s; stderr:\n%s", s.p.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop(t, s.p)

	logs := s.p.stdout.String() + s.p.stderr.String()
	if len(lines(logs)) < 3 {
		t.Fatalf("the server wrote almost nothing:\n%s", logs)
	}
	for name, tok := range tokens {
		_, secret, err := auth.Parse(tok)
		if err != nil {
			t.Fatalf("%s token %q: %v", name, tok, err)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("the server's output holds the %s token's secret", name)
		}
	}
	for _, leak := range []string{"Bearer", "Basic", "drv_", leaseToken} {
		if strings.Contains(logs, leak) {
			t.Errorf("the server's output holds %q", leak)
		}
	}

	// What the store holds: each token's hash, never its secret.
	var stored string
	if s.dataDir != "" {
		stored = dataDirBytes(t, s.dataDir)
	} else {
		stored = tokenRows(t, s.dbURL, s.schema)
	}
	for _, name := range []string{"admin", "producer", "worker", "read"} {
		_, secret, _ := auth.Parse(tokens[name])
		if strings.Contains(stored, secret) {
			t.Errorf("the store holds the %s token's secret", name)
		}
		if !strings.Contains(stored, auth.Hash(secret)) {
			t.Errorf("the store does not hold the %s token's hash %s", name, auth.Hash(secret))
		}
	}
}

// dataDirBytes returns every file of dir, concatenated.
func dataDirBytes(t *testing.T, dir string) string {
	t.Helper()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	var b strings.Builder
	err = fs.WalkDir(root.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(root.FS(), path)
		b.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if b.Len() == 0 {
		t.Fatalf("data directory %s is empty", dir)
	}
	return b.String()
}

// tokenRows returns every row of the schema's token table as text.
func tokenRows(t *testing.T, url, schema string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	rows, err := pool.Query(ctx, `SELECT to_jsonb(t)::text FROM `+pgx.Identifier{schema, "drover_tokens"}.Sanitize()+` t`)
	if err != nil {
		t.Fatal(err)
	}
	texts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(texts) < 4 {
		t.Fatalf("the tokens table holds %d rows, want at least 4", len(texts))
	}
	out, _ := json.Marshal(texts)
	return string(out)
}
