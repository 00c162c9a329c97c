package main

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

func runRoot(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

func TestTokenCommands(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	out, errOut, err := runRoot(t, "token", "create", "--scope", "worker", "--name", "py", "--data-dir", dir)
	if err != nil {
		t.Fatalf("create: %v %s", err, errOut)
	}
	tok := strings.TrimSpace(out)
	id, secret, err := auth.Parse(tok)
	if err != nil || id != 1 || secret == "" {
		t.Fatalf("create printed %q: %v", out, err)
	}
	if !strings.Contains(errOut, "shown only now") {
		t.Fatalf("create's note: %q", errOut)
	}
	// Only the hash is stored.
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.GetToken(t.Context(), id)
	if err != nil || rec.Hash == secret || !auth.Verify(secret, rec.Hash) || rec.Scope != "worker" || rec.Name != "py" {
		t.Fatalf("stored %+v, %v", rec, err)
	}
	// While the directory is owned, the commands say to stop the server.
	if _, _, err := runRoot(t, "token", "ls", "--data-dir", dir); err == nil || !strings.Contains(err.Error(), "stop the server") {
		t.Fatalf("ls on an owned directory: %v", err)
	}
	st.Close()

	out, _, err = runRoot(t, "token", "ls", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "py") || !strings.Contains(out, "worker") || strings.Contains(out, secret) {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	if out, _, err := runRoot(t, "token", "revoke", "1", "--data-dir", dir); err != nil || out != "token 1 revoked\n" {
		t.Fatalf("revoke: %q %v", out, err)
	}
	out, _, _ = runRoot(t, "token", "ls", "--data-dir", dir)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || strings.HasSuffix(lines[1], "-") {
		t.Fatalf("ls after revoke:\n%s", out)
	}
	if got := run([]string{"token", "create", "--scope", "root", "--data-dir", dir}); got != exitUsage {
		t.Fatalf("bad scope: exit %d", got)
	}
	if got := run([]string{"token", "revoke", "99", "--data-dir", dir}); got != exitFail {
		t.Fatalf("unknown token: exit %d", got)
	}
}

// TestTokenCommandsThroughServer bootstraps an admin token offline, starts
// the server, and manages tokens through its API with that token.
func TestTokenCommandsThroughServer(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	out, _, err := runRoot(t, "token", "create", "--scope", "admin", "--name", "boot", "--data-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	admin := strings.TrimSpace(out)
	base := startServerIn(t, dir)

	out, errOut, err := runRoot(t, "token", "create", "--scope", "producer", "--name", "ci", "--server", base, "--token", admin)
	if err != nil {
		t.Fatalf("create through the server: %v %s", err, errOut)
	}
	producer := strings.TrimSpace(out)
	if _, _, err := auth.Parse(producer); err != nil {
		t.Fatalf("created %q: %v", producer, err)
	}
	out, _, err = runRoot(t, "token", "ls", "--server", base, "--token", admin)
	if err != nil || !strings.Contains(out, "boot") || !strings.Contains(out, "ci") {
		t.Fatalf("ls through the server: %v\n%s", err, out)
	}
	// The producer token may enqueue but not manage tokens.
	if out, _, err := runRoot(t, "enqueue", "k", "--server", base, "--token", producer); err != nil || !strings.Contains(out, "enqueued job") {
		t.Fatalf("enqueue with the new token: %v %s", err, out)
	}
	if _, _, err := runRoot(t, "token", "ls", "--server", base, "--token", producer); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Fatalf("producer listing tokens: %v", err)
	}
	if out, _, err := runRoot(t, "token", "revoke", "2", "--server", base, "--token", admin); err != nil || out != "token 2 revoked\n" {
		t.Fatalf("revoke through the server: %q %v", out, err)
	}
}

// TestTokenCommandsOnPostgres manages tokens in a PostgreSQL database,
// where they can be made while servers run (no directory to own).
func TestTokenCommandsOnPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	db := []string{"--database-url", url, "--database-schema", schema}
	out, errOut, err := runRoot(t, append([]string{"token", "create", "--scope", "producer", "--name", "app"}, db...)...)
	if err != nil {
		t.Fatalf("create: %v %s", err, errOut)
	}
	id, secret, err := auth.Parse(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("create printed %q: %v", out, err)
	}
	st, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, NoMigrate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rec, err := st.GetToken(t.Context(), id)
	if err != nil || rec.Hash == secret || !auth.Verify(secret, rec.Hash) || rec.Scope != "producer" || rec.Name != "app" {
		t.Fatalf("stored %+v, %v", rec, err)
	}
	out, _, err = runRoot(t, append([]string{"token", "ls"}, db...)...)
	if err != nil || !strings.Contains(out, "app") || strings.Contains(out, secret) {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	if _, _, err := runRoot(t, append([]string{"token", "revoke", strconv.FormatInt(id, 10)}, db...)...); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if rec, err := st.GetToken(t.Context(), id); err != nil || rec.RevokedAt == nil {
		t.Fatalf("after revoke: %+v, %v", rec, err)
	}
}
