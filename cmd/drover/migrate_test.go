package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// migrateDB returns the test database's URL and a fresh schema, and the
// flags that point drover migrate at them.
func migrateDB(t *testing.T) (url, schema string, flags []string) {
	t.Helper()
	url = pgtest.TestURL(t)
	schema = pgtest.TestSchema(t, url)
	return url, schema, []string{"--database-url", url, "--database-schema", schema}
}

// schemaVersion reads the schema's version straight from the database.
func schemaVersion(t *testing.T, url, schema string) int {
	t.Helper()
	pool := schemaPool(t, url, schema)
	v, err := pgstore.Version(t.Context(), pool)
	if err != nil {
		t.Fatalf("read version of %s: %v", schema, err)
	}
	return v
}

// tableExists reports whether the schema holds the table.
func tableExists(t *testing.T, url, schema, table string) bool {
	t.Helper()
	var ok bool
	err := schemaPool(t, url, schema).QueryRow(t.Context(),
		`SELECT to_regclass($1) IS NOT NULL`, pgx.Identifier{schema, table}.Sanitize()).Scan(&ok)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func schemaPool(t *testing.T, url, schema string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// appliedLines is what migrate up prints when it applies every migration.
func appliedLines() string {
	var b strings.Builder
	for _, m := range pgstore.Migrations() {
		fmt.Fprintf(&b, "applied %d (%s)\n", m.Version, m.Name)
	}
	return b.String()
}

func mustMigrate(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runRoot(t, append([]string{"migrate"}, args...)...)
	if err != nil {
		t.Fatalf("migrate %q: %v\n%s%s", args, err, out, errOut)
	}
	return out
}

func TestMigrateUp(t *testing.T) {
	t.Parallel()
	url, schema, db := migrateDB(t)
	latest := len(pgstore.Migrations())
	if latest == 0 {
		t.Fatal("no migrations embedded")
	}

	if out := mustMigrate(t, db...); out != appliedLines() {
		t.Errorf("first migrate printed\n%s\nwant\n%s", out, appliedLines())
	}
	if v := schemaVersion(t, url, schema); v != latest {
		t.Fatalf("version after migrate = %d, want %d", v, latest)
	}
	for _, table := range []string{"drover_jobs", "drover_leader", "drover_migrations"} {
		if !tableExists(t, url, schema, table) {
			t.Errorf("table %s.%s missing after migrate", schema, table)
		}
	}
	want := fmt.Sprintf("schema is up to date at version %d\n", latest)
	if out := mustMigrate(t, db...); out != want {
		t.Errorf("second migrate printed %q, want %q", out, want)
	}
	// "up" is the same command, spelt out.
	if out := mustMigrate(t, append([]string{"up"}, db...)...); out != want {
		t.Errorf("migrate up printed %q, want %q", out, want)
	}
	if v := schemaVersion(t, url, schema); v != latest {
		t.Fatalf("version after the repeats = %d, want %d", v, latest)
	}
}

func TestMigrateStatus(t *testing.T) {
	t.Parallel()
	url, schema, db := migrateDB(t)
	all := pgstore.Migrations()
	latest := len(all)

	type status struct {
		Schema     string `json:"schema"`
		Version    int    `json:"version"`
		Latest     int    `json:"latest"`
		Pending    int    `json:"pending"`
		Migrations []struct {
			Version int    `json:"version"`
			Name    string `json:"name"`
			Applied bool   `json:"applied"`
		} `json:"migrations"`
	}
	check := func(when string, version int) {
		t.Helper()
		if v := schemaVersion(t, url, schema); v != version {
			t.Fatalf("%s: database at version %d, want %d", when, v, version)
		}
		var st status
		out := mustMigrate(t, append([]string{"status", "-o", "json"}, db...)...)
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("%s: status -o json: %v\n%s", when, err, out)
		}
		if st.Schema != schema || st.Version != version || st.Latest != latest || st.Pending != latest-version || len(st.Migrations) != latest {
			t.Fatalf("%s: status -o json = %+v", when, st)
		}
		for i, m := range st.Migrations {
			if m.Version != all[i].Version || m.Name != all[i].Name || m.Applied != (m.Version <= version) {
				t.Errorf("%s: status -o json migration %d = %+v", when, i, m)
			}
		}

		out = mustMigrate(t, append([]string{"status"}, db...)...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 5+latest {
			t.Fatalf("%s: status printed %d lines, want %d:\n%s", when, len(lines), 5+latest, out)
		}
		if lines[0] != "schema:  "+schema || lines[1] != fmt.Sprintf("version: %d", version) ||
			!strings.HasPrefix(lines[2], fmt.Sprintf("latest:  %d ", latest)) {
			t.Errorf("%s: status header:\n%s", when, out)
		}
		if f := strings.Fields(lines[4]); len(f) != 3 || f[0] != "VERSION" || f[1] != "NAME" || f[2] != "STATE" {
			t.Errorf("%s: status table header %q", when, lines[4])
		}
		for i, m := range all {
			want := "pending"
			if m.Version <= version {
				want = "applied"
			}
			f := strings.Fields(lines[5+i])
			if len(f) != 3 || f[0] != fmt.Sprint(m.Version) || f[1] != m.Name || f[2] != want {
				t.Errorf("%s: status row %q, want %d %s %s", when, lines[5+i], m.Version, m.Name, want)
			}
		}
	}

	// Status reads only: a schema that does not exist stays absent.
	check("before migrate", 0)
	if tableExists(t, url, schema, "drover_migrations") {
		t.Fatal("status created drover_migrations")
	}
	mustMigrate(t, db...)
	check("after migrate", latest)
	mustMigrate(t, append([]string{"down", "--to", "1"}, db...)...)
	check("after down --to 1", 1)
}

func TestMigrateDownThenUp(t *testing.T) {
	t.Parallel()
	url, schema, db := migrateDB(t)
	all := pgstore.Migrations()
	latest := len(all)
	mustMigrate(t, db...)

	var want strings.Builder
	for i := latest - 1; i >= 0; i-- {
		fmt.Fprintf(&want, "reverted %d (%s)\n", all[i].Version, all[i].Name)
	}
	if out := mustMigrate(t, append([]string{"down", "--to", "0"}, db...)...); out != want.String() {
		t.Errorf("down --to 0 printed\n%s\nwant\n%s", out, want.String())
	}
	if v := schemaVersion(t, url, schema); v != 0 {
		t.Fatalf("version after down --to 0 = %d, want 0", v)
	}
	if tableExists(t, url, schema, "drover_jobs") {
		t.Error("drover_jobs still exists after down --to 0")
	}
	if out := mustMigrate(t, append([]string{"down", "--to", "0"}, db...)...); out != "schema is already at version 0: nothing to undo\n" {
		t.Errorf("second down --to 0 printed %q", out)
	}

	if out := mustMigrate(t, append([]string{"up"}, db...)...); out != appliedLines() {
		t.Errorf("up after down printed\n%s\nwant\n%s", out, appliedLines())
	}
	if v := schemaVersion(t, url, schema); v != latest {
		t.Fatalf("version after up = %d, want %d", v, latest)
	}
	if !tableExists(t, url, schema, "drover_jobs") {
		t.Error("drover_jobs missing after up")
	}
}

// TestMigrateDownRefusals checks that down without --to, or with one out
// of range, is bad usage and leaves the schema alone.
func TestMigrateDownRefusals(t *testing.T) {
	t.Parallel()
	url, schema, db := migrateDB(t)
	mustMigrate(t, db...)
	mustMigrate(t, append([]string{"down", "--to", "1"}, db...)...)

	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"without --to", nil, "needs --to"},
		{"negative --to", []string{"--to", "-1"}, "--to -1"},
		{"--to beyond this build", []string{"--to", fmt.Sprint(len(pgstore.Migrations()) + 1)}, "this build knows"},
		{"--to above the current version", []string{"--to", "2"}, "schema is at version 1"},
		{"--to that is not a number", []string{"--to", "all"}, "invalid argument"},
	}
	for _, tt := range tests {
		args := append(append([]string{"migrate", "down"}, tt.args...), db...)
		var ue *usageError
		if _, _, err := runRoot(t, args...); !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %v, want a usage error saying %q", tt.name, err, tt.msg)
		}
		if got := run(args); got != exitUsage {
			t.Errorf("%s: run(%q) = %d, want %d", tt.name, args, got, exitUsage)
		}
	}
	if v := schemaVersion(t, url, schema); v != 1 {
		t.Fatalf("version after the refusals = %d, want 1", v)
	}
}

// TestMigrateUsage covers command lines refused before any connection.
func TestMigrateUsage(t *testing.T) {
	t.Parallel()
	url := "postgres://postgres@127.0.0.1:1/test?sslmode=disable" // never dialled
	tests := []struct {
		name string
		args []string
	}{
		{"unknown subcommand", []string{"migrate", "sideways", "--database-url", url}},
		{"up with an argument", []string{"migrate", "up", "3", "--database-url", url}},
		{"unknown flag", []string{"migrate", "--nope", "--database-url", url}},
		{"bad output format", []string{"migrate", "status", "-o", "yaml", "--database-url", url}},
		{"schema name that needs quoting", []string{"migrate", "--database-url", url, "--database-schema", "Drover-Jobs"}},
		{"unparseable URL", []string{"migrate", "--database-url", "postgres://u@127.0.0.1:notaport/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := run(tt.args); got != exitUsage {
				t.Errorf("run(%q) = %d, want %d", tt.args, got, exitUsage)
			}
		})
	}
}

// TestMigrateDatabaseFromEnvironment checks both sides of the fallback to
// DROVER_DATABASE_URL and DROVER_DATABASE_SCHEMA. It is not parallel: it
// sets environment variables (paralleltest knows t.Setenv).
func TestMigrateDatabaseFromEnvironment(t *testing.T) {
	t.Setenv("DROVER_DATABASE_URL", "")
	t.Setenv("DROVER_DATABASE_SCHEMA", "")
	for _, sub := range [][]string{{"migrate"}, {"migrate", "up"}, {"migrate", "status"}, {"migrate", "down", "--to", "0"}} {
		var ue *usageError
		if _, _, err := runRoot(t, sub...); !errors.As(err, &ue) || !strings.Contains(err.Error(), "needs PostgreSQL") {
			t.Errorf("%q without a database URL: %v, want a usage error saying migrate needs PostgreSQL", sub, err)
		}
		if got := run(sub); got != exitUsage {
			t.Errorf("run(%q) without a database URL = %d, want %d", sub, got, exitUsage)
		}
	}

	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	t.Setenv("DROVER_DATABASE_URL", url)
	t.Setenv("DROVER_DATABASE_SCHEMA", schema)
	if out := mustMigrate(t); out != appliedLines() {
		t.Errorf("migrate from the environment printed\n%s", out)
	}
	if v := schemaVersion(t, url, schema); v != len(pgstore.Migrations()) {
		t.Fatalf("version = %d, want %d", v, len(pgstore.Migrations()))
	}
}

func TestMigrateHidesPassword(t *testing.T) {
	t.Parallel()
	const secret = "hunter2-s3cr3t"
	tests := []struct {
		name, url string
		exit      int
	}{
		{"unparseable URL", "postgres://drover:" + secret + "@127.0.0.1:notaport/test", exitUsage},
		{"unparseable URL, encoded password", "postgres://drover:" + secret + "%40x@127.0.0.1:notaport/test", exitUsage},
		{"unparseable URL, password with an unencoded @", "postgres://drover:p@" + secret + "@127.0.0.1:notaport/test", exitUsage},
		{"DSN", "host=127.0.0.1 port=notaport user=drover password=" + secret, exitUsage},
		{"nobody listening", "postgres://drover:" + secret + "@127.0.0.1:1/test?sslmode=disable", exitFail},
		// A server that answers: the URL of the tests, with a password
		// and a database that does not exist.
		{"database that does not exist", "", exitFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dbURL := tt.url
			if dbURL == "" {
				u, err := url.Parse(pgtest.TestURL(t))
				if err != nil {
					t.Skipf("DROVER_TEST_DATABASE_URL is not a URL: %v", err)
				}
				u.User = url.UserPassword(u.User.Username(), secret)
				u.Path = "/drover_no_such_db"
				dbURL = u.String()
			}
			for _, sub := range [][]string{{"migrate"}, {"migrate", "status"}, {"migrate", "down", "--to", "0"}} {
				args := append(sub, "--database-url", dbURL)
				out, errOut, err := runRoot(t, args...)
				if err == nil {
					t.Fatalf("%q succeeded", args)
				}
				for _, s := range []string{err.Error(), out, errOut} {
					if strings.Contains(s, secret) {
						t.Errorf("%q echoed the password: %q", args, s)
					}
				}
				var ue *usageError
				if isUsage := errors.As(err, &ue); isUsage != (tt.exit == exitUsage) {
					t.Errorf("%q: %v, usage error %v, want exit %d", args, err, isUsage, tt.exit)
				}
			}
		})
	}
}
