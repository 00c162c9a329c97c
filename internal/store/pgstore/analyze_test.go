package pgstore_test

import (
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// lastAnalyze reports whether drover_jobs in schema has been analyzed
// by an ANALYZE command (autovacuum's own analyses are counted apart).
func lastAnalyzed(t *testing.T, s *pgstore.Store) bool {
	t.Helper()
	var analyzed bool
	err := s.Pool().QueryRow(t.Context(), `SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables
		WHERE schemaname = $1 AND relname = 'drover_jobs'`, s.Schema()).Scan(&analyzed)
	if err != nil {
		t.Fatal(err)
	}
	return analyzed
}

// TestAnalyzesYoungTable checks that a store refreshes the statistics of
// a new, growing drover_jobs itself (so that cached plans are not those
// of an empty table), and that it does not when told to leave them to
// autovacuum.
func TestAnalyzesYoungTable(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		every time.Duration
		want  bool
	}{
		{"keeper", 20 * time.Millisecond, true},
		{"autovacuum_alone", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.TestURL(t)
			s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: pgtest.TestSchema(t, url), AnalyzeEvery: tc.every})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			insertJobs(t, s, job.DefaultQueue, 2500, time.Now(), time.Time{})
			// PostgreSQL publishes a backend's row counts within about
			// ten seconds of its last write.
			deadline := time.Now().Add(20 * time.Second)
			if !tc.want {
				deadline = time.Now().Add(3 * time.Second)
			}
			for !lastAnalyzed(t, s) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if got := lastAnalyzed(t, s); got != tc.want {
				t.Fatalf("drover_jobs analyzed = %v after 2,500 inserts, want %v (the store ran %d ANALYZEs)", got, tc.want, pgstore.Analyzes(s))
			}
			if tc.want && pgstore.Analyzes(s) == 0 {
				t.Fatal("drover_jobs was analyzed, but not by the store")
			}
		})
	}
}
