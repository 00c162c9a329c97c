// Package pgtest gives tests a PostgreSQL database: the URL (skipping loudly
// when none answers, failing under CI) and a fresh schema per test.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultTestURL is the database the tests use when
// DROVER_TEST_DATABASE_URL is not set.
const DefaultTestURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// TestURL returns the database URL for tests. When no server answers it
// skips the test with a loud message, except under CI (CI=true), where
// the PostgreSQL tests must run and the test fails instead.
func TestURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("DROVER_TEST_DATABASE_URL")
	if url == "" {
		url = DefaultTestURL
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL at DROVER_TEST_DATABASE_URL (%s) does not answer, and CI=true requires it: %v", redacted(url), err)
		}
		t.Skipf("SKIPPING PostgreSQL test: no server at %s (%v); set DROVER_TEST_DATABASE_URL or start PostgreSQL", redacted(url), err)
	}
	_ = conn.Close(ctx)
	// Many tests, and the server processes of the end-to-end tests, run
	// at once against one server with max_connections 100: keep each
	// pool small unless the URL says otherwise.
	if !strings.Contains(url, "pool_max_conns") {
		sep := "?"
		if strings.Contains(url, "?") {
			sep = "&"
		}
		url += sep + "pool_max_conns=6"
	}
	return url
}

// TestSchema creates a fresh schema for one test and drops it when the
// test ends; tests that each use their own schema can run in parallel.
func TestSchema(t testing.TB, url string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	name := "drover_t_" + hex.EncodeToString(b[:])
	t.Cleanup(func() {
		// The test's context is done by cleanup time.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 30*time.Second)
		defer cancel()
		pool, err := pgxpool.New(ctx, url)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{name}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// redacted hides a password in url.
func redacted(url string) string {
	cfg, err := pgx.ParseConfig(url)
	if err != nil || cfg.Password == "" {
		return url
	}
	return strings.ReplaceAll(url, cfg.Password, "xxxxx")
}
