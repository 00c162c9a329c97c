package pgstore_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// schemaPool returns a pool whose search_path is schema, closed when the
// test ends (before pgtest drops the schema).
func schemaPool(t *testing.T, url, schema string) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// freshSchema returns a new, empty schema (not yet created: Migrate
// creates it) and a pool on it.
func freshSchema(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	return schema, schemaPool(t, url, schema)
}

// upTo returns 1..n; downFrom returns n..1.
func upTo(n int) []int {
	out := []int{}
	for v := 1; v <= n; v++ {
		out = append(out, v)
	}
	return out
}

func downFrom(n int) []int {
	out := upTo(n)
	slices.Reverse(out)
	return out
}

// snapshot describes every relation (table, index, sequence, view) and
// every column in schema, so that two versions can be compared exactly.
func snapshot(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `
		SELECT 'relation ' || c.relname || ' kind ' || c.relkind::text
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1
		UNION ALL
		SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' null=' || is_nullable
		FROM information_schema.columns
		WHERE table_schema = $1
		ORDER BY 1`, schema)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// tables returns the names of the drover_ tables in schema.
func tables(t *testing.T, pool *pgxpool.Pool, schema string) []string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT table_name FROM information_schema.tables
		WHERE table_schema = $1 AND table_name LIKE 'drover\_%' ORDER BY 1`, schema)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantVersion(t *testing.T, pool *pgxpool.Pool, want int) {
	t.Helper()
	got, err := pgstore.Version(t.Context(), pool)
	if err != nil {
		t.Fatalf("Version: %v", err)
	}
	if got != want {
		t.Fatalf("Version = %d, want %d", got, want)
	}
}

func migrate(t *testing.T, pool *pgxpool.Pool, schema string, target int, want []int) {
	t.Helper()
	got, err := pgstore.Migrate(t.Context(), pool, schema, target)
	if err != nil {
		t.Fatalf("Migrate(%d): %v", target, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Migrate(%d) applied %v, want %v", target, got, want)
	}
}

func migrateDown(t *testing.T, pool *pgxpool.Pool, schema string, target int, want []int) {
	t.Helper()
	got, err := pgstore.MigrateDown(t.Context(), pool, schema, target)
	if err != nil {
		t.Fatalf("MigrateDown(%d): %v", target, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("MigrateDown(%d) undid %v, want %v", target, got, want)
	}
}

// TestMigrations checks the embedded files: versions 1..N without a gap,
// each with a name and both directions, since MigrateDown indexes them by
// version.
func TestMigrations(t *testing.T) {
	t.Parallel()
	all := pgstore.Migrations()
	if len(all) == 0 {
		t.Fatal("no migrations embedded")
	}
	for i, m := range all {
		if m.Version != i+1 {
			t.Errorf("migration %d has version %d, want %d (versions must run 1..N without a gap)", i, m.Version, i+1)
		}
		if m.Name == "" {
			t.Errorf("migration %d has no name (is its .up.sql missing?)", m.Version)
		}
		if strings.TrimSpace(m.Up) == "" {
			t.Errorf("migration %d (%s) has an empty up", m.Version, m.Name)
		}
		if strings.TrimSpace(m.Down) == "" {
			t.Errorf("migration %d (%s) has an empty down", m.Version, m.Name)
		}
	}
}

// TestMigrateRoundTrip applies every migration on a fresh schema, undoes
// them all, applies them again, and then undoes and redoes each one alone,
// checking after every step that down restores exactly the schema that the
// version below had.
func TestMigrateRoundTrip(t *testing.T) {
	t.Parallel()
	schema, pool := freshSchema(t)
	n := len(pgstore.Migrations())

	wantVersion(t, pool, 0)
	migrate(t, pool, schema, pgstore.Latest, upTo(n))
	wantVersion(t, pool, n)
	got := tables(t, pool, schema)
	for _, want := range []string{"drover_jobs", "drover_job_deps", "drover_queues", "drover_tokens",
		"drover_idempotency_keys", "drover_leader", "drover_migrations"} {
		if !slices.Contains(got, want) {
			t.Errorf("after Migrate, table %s is missing (have %v)", want, got)
		}
	}
	migrate(t, pool, schema, pgstore.Latest, nil) // nothing left to do

	migrateDown(t, pool, schema, 0, downFrom(n))
	wantVersion(t, pool, 0)
	if got := tables(t, pool, schema); !slices.Equal(got, []string{"drover_migrations"}) {
		t.Errorf("after MigrateDown to 0, drover tables = %v, want only drover_migrations", got)
	}
	empty := snapshot(t, pool, schema)
	for _, s := range empty {
		if !strings.Contains(s, "drover_migrations") {
			t.Errorf("after MigrateDown to 0, %s remains", s)
		}
	}

	// Up one version at a time, recording each version's schema.
	snaps := [][]string{empty}
	for v := 1; v <= n; v++ {
		migrate(t, pool, schema, v, []int{v})
		wantVersion(t, pool, v)
		snaps = append(snaps, snapshot(t, pool, schema))
	}
	// Each migration down, up and down again, alone, from the top.
	for v := n; v >= 1; v-- {
		migrateDown(t, pool, schema, v-1, []int{v})
		wantVersion(t, pool, v-1)
		if got := snapshot(t, pool, schema); !slices.Equal(got, snaps[v-1]) {
			t.Fatalf("down of migration %d left a schema unlike version %d's:\n got %v\nwant %v", v, v-1, got, snaps[v-1])
		}
		migrate(t, pool, schema, v, []int{v})
		if got := snapshot(t, pool, schema); !slices.Equal(got, snaps[v]) {
			t.Fatalf("migration %d applied again differs:\n got %v\nwant %v", v, got, snaps[v])
		}
		migrateDown(t, pool, schema, v-1, []int{v})
	}
	wantVersion(t, pool, 0)
	migrate(t, pool, schema, pgstore.Latest, upTo(n))
	if got := snapshot(t, pool, schema); !slices.Equal(got, snaps[n]) {
		t.Fatalf("second full migration differs from the first:\n got %v\nwant %v", got, snaps[n])
	}
}

// TestMigrateNeverMovesDown asks Migrate for a version below the current
// one: it must leave the schema alone (moving down is MigrateDown's job,
// which drops data), and MigrateDown to a version above the current one
// does nothing either.
func TestMigrateNeverMovesDown(t *testing.T) {
	t.Parallel()
	schema, pool := freshSchema(t)
	n := len(pgstore.Migrations())
	migrate(t, pool, schema, pgstore.Latest, upTo(n))
	for target := range n {
		migrate(t, pool, schema, target, nil)
		wantVersion(t, pool, n)
	}
	migrateDown(t, pool, schema, 0, downFrom(n))
	for target := 1; target <= n; target++ {
		migrateDown(t, pool, schema, target, nil)
		wantVersion(t, pool, 0)
	}
}

// TestMigrateConcurrent starts eight nodes at once on one fresh schema:
// the advisory lock must make one apply each migration and the others find
// nothing to do, without any error. In "mixed", half the nodes name the
// schema and half only select it with their pool's search_path (as New
// does); they must take turns all the same.
func TestMigrateConcurrent(t *testing.T) {
	t.Parallel()
	for _, mixed := range []bool{false, true} {
		name := "named"
		if mixed {
			name = "mixed"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.TestURL(t)
			schema := pgtest.TestSchema(t, url)
			n := len(pgstore.Migrations())
			const nodes = 8
			pools := make([]*pgxpool.Pool, nodes)
			for i := range pools {
				pools[i] = schemaPool(t, url, schema)
			}
			if mixed {
				// A node that does not name the schema cannot create it.
				if _, err := pools[0].Exec(t.Context(), `CREATE SCHEMA `+schema); err != nil {
					t.Fatal(err)
				}
			}

			var (
				wg      sync.WaitGroup
				start   = make(chan struct{})
				applied = make([][]int, nodes)
				errs    = make([]error, nodes)
			)
			for i := range nodes {
				named := schema
				if mixed && i%2 == 1 {
					named = ""
				}
				wg.Go(func() {
					<-start
					applied[i], errs[i] = pgstore.Migrate(t.Context(), pools[i], named, pgstore.Latest)
				})
			}
			close(start)
			wg.Wait()

			var all []int
			for i := range nodes {
				if errs[i] != nil {
					t.Errorf("node %d: Migrate: %v", i, errs[i])
				}
				all = append(all, applied[i]...)
			}
			slices.Sort(all)
			if !slices.Equal(all, upTo(n)) {
				t.Errorf("versions applied across all nodes = %v, want %v once each (per node: %v)", all, upTo(n), applied)
			}
			wantVersion(t, pools[0], n)
		})
	}
}

// TestMigrateVersionMismatch checks both ways a build and a database can
// disagree: an old schema under NoMigrate tells the operator to run
// `drover migrate`, and a schema newer than the build is refused rather
// than used or changed.
func TestMigrateVersionMismatch(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	pool := schemaPool(t, url, schema)
	n := len(pgstore.Migrations())

	migrate(t, pool, schema, n-1, upTo(n-1))
	s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, NoMigrate: true, MaxConns: 2})
	if err == nil {
		_ = s.Close()
		t.Fatal("Open with NoMigrate on an old schema succeeded")
	}
	if !errors.Is(err, job.ErrUnavailable) || !strings.Contains(err.Error(), "drover migrate") {
		t.Errorf("Open with NoMigrate on an old schema: %v; want job.ErrUnavailable mentioning `drover migrate`", err)
	}
	wantVersion(t, pool, n-1)

	// Without NoMigrate, Open brings the schema up to date.
	s, err = pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 2})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	_ = s.Close()
	wantVersion(t, pool, n)

	// A newer build migrated this database.
	if _, err := pool.Exec(t.Context(), `INSERT INTO drover_migrations (version, name) VALUES ($1, 'from_the_future')`, n+1); err != nil {
		t.Fatal(err)
	}
	newer := func(what string, err error) {
		t.Helper()
		if err == nil || !errors.Is(err, job.ErrUnavailable) || !strings.Contains(err.Error(), "newer") {
			t.Errorf("%s on a newer schema: %v; want job.ErrUnavailable saying it is newer", what, err)
		}
	}
	applied, err := pgstore.Migrate(t.Context(), pool, schema, pgstore.Latest)
	newer("Migrate", err)
	if len(applied) > 0 {
		t.Errorf("Migrate on a newer schema applied %v", applied)
	}
	undone, err := pgstore.MigrateDown(t.Context(), pool, schema, 0)
	newer("MigrateDown", err)
	if len(undone) > 0 {
		t.Errorf("MigrateDown on a newer schema undid %v", undone)
	}
	s, err = pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 2})
	if err == nil {
		_ = s.Close()
	}
	newer("Open", err)
	s, err = pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, NoMigrate: true, MaxConns: 2})
	if err == nil {
		_ = s.Close()
		t.Error("Open with NoMigrate on a newer schema succeeded")
	}
	wantVersion(t, pool, n+1)
	if got := tables(t, pool, schema); !slices.Contains(got, "drover_jobs") {
		t.Errorf("a refused migration changed the schema: tables %v", got)
	}
}

// TestMigrateTargetOutOfRange checks that a target outside 0..N (or Latest
// for Migrate) is the caller's mistake, reported before any database work.
func TestMigrateTargetOutOfRange(t *testing.T) {
	t.Parallel()
	schema, pool := freshSchema(t)
	n := len(pgstore.Migrations())
	for _, target := range []int{-2, n + 1, n + 100} {
		t.Run(fmt.Sprintf("up to %d", target), func(t *testing.T) {
			t.Parallel()
			_, err := pgstore.Migrate(t.Context(), pool, schema, target)
			if ve := (*job.ValidationError)(nil); !errors.As(err, &ve) {
				t.Errorf("Migrate(%d) = %v, want a *job.ValidationError", target, err)
			}
		})
	}
	for _, target := range []int{pgstore.Latest, -2, n + 1} {
		t.Run(fmt.Sprintf("down to %d", target), func(t *testing.T) {
			t.Parallel()
			_, err := pgstore.MigrateDown(t.Context(), pool, schema, target)
			if ve := (*job.ValidationError)(nil); !errors.As(err, &ve) {
				t.Errorf("MigrateDown(%d) = %v, want a *job.ValidationError", target, err)
			}
		})
	}
	t.Run("untouched", func(t *testing.T) {
		t.Parallel()
		wantVersion(t, pool, 0)
	})
}
