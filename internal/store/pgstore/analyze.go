package pgstore

import (
	"context"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Statistics for a young table.
//
// Drover's statements are prepared once per connection and, with
// plan_cache_mode=force_generic_plan, planned once: with the statistics
// the table has at that moment. A new deployment's drover_jobs has none
// (it was never analyzed), and PostgreSQL's planner then takes it for ten
// pages of nothing, where any plan is as cheap as any other. The plans it
// caches there can scan a whole index range per call: the completion
// looked its jobs up by scanning every 'running' entry of
// drover_jobs_state, dead versions included, and the release of
// dependants every 'completed' one. Each completion then cost in
// proportion to the jobs the table had ever held, until autovacuum's
// first ANALYZE (a minute or more later) made every connection plan
// again.
//
// So the store runs ANALYZE itself while the table is young: whenever
// the rows changed since the last analysis outnumber both 1,000 and the
// rows the table held then. That is a handful of ANALYZEs as the table
// grows by doublings, each of which invalidates the cached plans, and
// none once the table is large and autovacuum's own thresholds (10% of
// the table) come first. One node at a time does it, under an advisory
// lock.

// defaultAnalyzeEvery is how often a store checks whether drover_jobs
// needs its statistics refreshed.
const defaultAnalyzeEvery = time.Second

// needsAnalyzeSQL says whether drover_jobs changed, since its last
// analysis, by more than 1,000 rows and more than it held then (reltuples
// is -1 before the first analysis).
const needsAnalyzeSQL = `SELECT coalesce(t.n_mod_since_analyze > greatest(1000, c.reltuples), false)
FROM pg_class c LEFT JOIN pg_stat_user_tables t ON t.relid = c.oid
WHERE c.oid = 'drover_jobs'::regclass`

// startAnalyzer starts the loop that keeps drover_jobs' statistics
// current while the table is young.
func (s *Store) startAnalyzer(every time.Duration) {
	if every < 0 {
		return
	}
	if every == 0 {
		every = defaultAnalyzeEvery
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.analyzeStop = cancel
	s.analyzeDone = make(chan struct{})
	go func() {
		defer close(s.analyzeDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := s.maybeAnalyze(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("refresh drover_jobs statistics", "err", err)
			}
		}
	}()
}

func (s *Store) stopAnalyzer() {
	if s.analyzeStop != nil {
		s.analyzeStop()
		<-s.analyzeDone
	}
}

// maybeAnalyze runs ANALYZE drover_jobs when needsAnalyzeSQL says so and
// no other node is doing it.
func (s *Store) maybeAnalyze(ctx context.Context) error {
	var need bool
	if err := s.pool.QueryRow(ctx, needsAnalyzeSQL).Scan(&need); err != nil || !need {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, analyzeLockKey(s.schema)).Scan(&got); err != nil || !got {
			return err
		}
		if _, err := tx.Exec(ctx, `ANALYZE drover_jobs`); err != nil {
			return err
		}
		s.analyzes.Add(1)
		return nil
	})
}

// analyzeLockKey is the advisory lock that one schema's ANALYZEs take.
func analyzeLockKey(schema string) int64 {
	h := fnv.New64a()
	h.Write([]byte("drover analyze\x00" + schema))
	return int64(h.Sum64()) //nolint:gosec // G115: any 64 bits make a key
}
