package pgstore_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/storetest"
)

// TestModel checks the store against the reference model of
// storetest.RunModel. The checks share one schema, emptied between them.
func TestModel(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	// A check commits hundreds of small transactions; waiting for each
	// WAL flush would dominate. Reopening a store within one server
	// (the restart action) still finds every commit.
	if strings.Contains(url, "?") {
		url += "&synchronous_commit=off"
	} else {
		url += "?synchronous_commit=off"
	}
	// Create the schema's tables before the first Reset empties them.
	s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 4})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{schema}.Sanitize()
	cfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	storetest.RunModel(t, storetest.ModelFactory{
		Reset: func(ctx context.Context) error {
			// DELETE, not TRUNCATE: the tables are tiny, and TRUNCATE
			// replaces their files at every check.
			_, err := pool.Exec(ctx, `DELETE FROM drover_job_deps; DELETE FROM drover_jobs; DELETE FROM drover_queues;
				SELECT setval(pg_get_serial_sequence('drover_jobs', 'id'), 1, false)`)
			return err
		},
		Open: func(ctx context.Context) (store.Store, error) {
			return pgstore.Open(ctx, url, pgstore.Options{Schema: schema, MaxConns: 4})
		},
		Reuse: true,
	}, modelChecks())
}

// modelChecks is 1,000 checks (issue #5), or 100 with -short.
func modelChecks() int {
	if testing.Short() {
		return 100
	}
	return 1000
}
