package pgstore

import (
	"context"
	"fmt"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Failures are batched across concurrent callers, as completions are by
// the client's completers: one goroutine takes every Fail waiting at the
// moment and settles them all with one read and one fenced UPDATE. A
// burst of failing jobs (a dependency down, a bad deploy) then costs two
// round trips per batch instead of per job.

// maxFailBatch bounds one batch of failures.
const maxFailBatch = 256

type failReq struct {
	p    store.FailParams
	done chan failRes // buffered: the batcher never waits for a caller
}

type failRes struct {
	j   *job.Job
	err error
}

// startFailer starts the failure batcher.
func (s *Store) startFailer() {
	ctx, cancel := context.WithCancel(context.Background())
	s.failCh = make(chan *failReq)
	s.failStop = cancel
	s.failDone = make(chan struct{})
	go s.failLoop(ctx)
}

// stopFailer stops the batcher once its batch in flight is done.
func (s *Store) stopFailer() {
	if s.failStop == nil {
		return
	}
	s.failStop()
	<-s.failDone
}

// Fail implements store.Store. Concurrent calls are settled together (see
// failLoop); each still gets its own result.
func (s *Store) Fail(ctx context.Context, p store.FailParams) (*job.Job, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	r := &failReq{p: p, done: make(chan failRes, 1)}
	select {
	case s.failCh <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.failDone:
		return nil, errClosed
	}
	// Once taken, the failure is settled whatever the caller does: like a
	// statement already sent, it may be recorded after the caller gave up.
	select {
	case res := <-r.done:
		return res.j, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *Store) failLoop(ctx context.Context) {
	defer close(s.failDone)
	for {
		var first *failReq
		select {
		case first = <-s.failCh:
		case <-ctx.Done():
			return
		}
		batch := []*failReq{first}
	more:
		for len(batch) < maxFailBatch {
			select {
			case r := <-s.failCh:
				batch = append(batch, r)
			default:
				break more
			}
		}
		s.failBatches.Add(1)
		s.failBatch(batch)
	}
}

// failBatch settles a batch of failures: it reads the jobs, decides each
// failure in Go (backoffs are Go code), and updates the jobs whose lease
// is still the caller's in one statement fenced by the tokens. While a
// token is live nothing else changes the attempt or limits the decision
// rests on; a lease that ended meanwhile matches nothing and settleError
// says why, as for every refused settle.
func (s *Store) failBatch(batch []*failReq) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results := make([]failRes, len(batch))
	err := s.retry(ctx, func() error {
		return s.failBatchOnce(ctx, batch, results)
	})
	var avail []*job.Job
	for i, r := range batch {
		res := results[i]
		if err != nil {
			res = failRes{err: err}
		}
		if res.j != nil && res.j.State == job.StateAvailable {
			avail = append(avail, res.j)
		}
		r.done <- res
	}
	s.announceJobs(avail...)
}

func (s *Store) failBatchOnce(ctx context.Context, batch []*failReq, results []failRes) error {
	ids := make([]int64, 0, len(batch))
	for _, r := range batch {
		ids = append(ids, int64(r.p.ID))
	}
	jobs, err := collect(s.pool.Query(ctx, `SELECT `+jobCols+` FROM drover_jobs j WHERE j.id = ANY($1::bigint[])`, ids))
	if err != nil {
		return err
	}
	byID := make(map[job.ID]*job.Job, len(jobs))
	for _, j := range jobs {
		byID[j.ID] = j
	}
	var (
		uIDs      []int64
		uStates   []string
		uTokens   []string
		uScheds   []time.Time
		uFins     []*time.Time
		uEntries  []*string
		uReleases []bool
		pending   = map[job.ID]int{} // batch index of each job updated
		later     []int              // repeats of a job already in this batch
	)
	for i, r := range batch {
		p := r.p
		now := job.Truncate(p.Now)
		j, ok := byID[p.ID]
		if !ok {
			results[i] = failRes{err: fmt.Errorf("job %d: %w", p.ID, job.ErrNotFound)}
			continue
		}
		if _, dup := pending[p.ID]; dup {
			later = append(later, i)
			continue
		}
		if j.State != job.StateRunning || j.LeaseToken != p.LeaseToken {
			results[i].j, results[i].err = s.settleError(ctx, s.pool, p.ID, p.LeaseToken, "fail")
			continue
		}
		next, retryAt := store.FailOutcome(j, p, now)
		entry, err := errorEntry(j.Attempt, now, p.Message, p.Detail)
		if err != nil {
			results[i] = failRes{err: err}
			continue
		}
		var fin *time.Time
		if next.Final() {
			fin = &now
		}
		sched := store.NextScheduledAt(j, next, retryAt, now)
		pending[p.ID] = i
		uIDs = append(uIDs, int64(p.ID))
		uStates = append(uStates, string(next))
		uTokens = append(uTokens, p.LeaseToken)
		uScheds = append(uScheds, sched)
		uFins = append(uFins, fin)
		uEntries = append(uEntries, entry)
		uReleases = append(uReleases, !job.HoldsUnique(next, true))
	}
	if len(uIDs) > 0 {
		updated, err := collect(s.pool.Query(ctx, `UPDATE drover_jobs j SET state = u.state, scheduled_at = u.sched,
			finalized_at = u.fin, lease_expires_at = NULL, settled = 'fail',
			errors = coalesce(j.errors, '[]'::jsonb) || jsonb_build_array(u.entry::jsonb),
			unique_key = CASE WHEN u.release THEN NULL ELSE j.unique_key END
			FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[], $7::boolean[])
				AS u(id, token, state, sched, fin, entry, release)
			WHERE j.id = ANY($1::bigint[]) AND j.id = u.id AND j.lease_token = u.token AND (j.state = 'running') IS TRUE
			RETURNING `+jobCols, uIDs, uTokens, uStates, uScheds, uFins, uEntries, uReleases))
		if err != nil {
			return err
		}
		for _, j := range updated {
			j.LeaseToken = ""
			results[pending[j.ID]] = failRes{j: j}
			delete(pending, j.ID)
		}
		// The rest lost their lease between the read and the update.
		for id, i := range pending {
			results[i].j, results[i].err = s.settleError(ctx, s.pool, id, batch[i].p.LeaseToken, "fail")
		}
	}
	// A repeat of a failure already in this batch is settled now, as the
	// idempotent repeat (or stale token) it is.
	for _, i := range later {
		p := batch[i].p
		results[i].j, results[i].err = s.settleError(ctx, s.pool, p.ID, p.LeaseToken, "fail")
	}
	return nil
}
