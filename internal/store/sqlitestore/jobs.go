package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Insert implements store.Store.
func (s *Store) Insert(ctx context.Context, p store.InsertParams) ([]store.InsertResult, error) {
	now := job.Truncate(p.Now)
	var out []store.InsertResult
	if len(p.Jobs) <= insertRowsPerStmt && allPlain(p.Jobs) {
		// Deferred: the writer gathers the plain inserts of a whole
		// group into as few multi-row INSERTs as it can (see flushPlain).
		out = make([]store.InsertResult, len(p.Jobs))
		err := s.submit(ctx, func(w *wtx) error {
			w.pending = append(w.pending, pendingPlain{o: w.cur, jobs: p.Jobs, now: now, out: out})
			return nil
		}, opPlain)
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = w.insert(w.ctx, p.Jobs, now)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// insert inserts jobs in order and returns their results.
func (w *wtx) insert(ctx context.Context, jobs []*job.Insert, now time.Time) ([]store.InsertResult, error) {
	out := make([]store.InsertResult, len(jobs))
	// Runs of plain jobs (not unique, no dependencies) go in multi-row
	// statements; the others one by one, in order.
	run := 0
	for i, in := range jobs {
		if in.UniqueKey == "" && len(in.DependsOn) == 0 {
			continue
		}
		if err := w.insertPlain(ctx, jobs[run:i], now, out[run:i]); err != nil {
			return nil, err
		}
		r, err := w.insertOne(ctx, in, now, i, len(jobs) > 1)
		if err != nil {
			return nil, err
		}
		out[i] = r
		run = i + 1
	}
	if err := w.insertPlain(ctx, jobs[run:], now, out[run:]); err != nil {
		return nil, err
	}
	return out, nil
}

// InsertIdempotent implements store.Store.
func (s *Store) InsertIdempotent(ctx context.Context, p store.IdempotentInsertParams) (*store.IdempotentInsertResult, error) {
	if p.Key == "" || p.Render == nil {
		return nil, &job.ValidationError{Field: "Idempotency-Key", Message: "a key and a renderer are required"}
	}
	now := job.Truncate(p.Now)
	var out *store.IdempotentInsertResult
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		var hash string
		var status int
		var body []byte
		err := s.stmts.idemLookup.QueryRowContext(ctx, p.Key, micros(p.Since)).Scan(&hash, &status, &body)
		switch {
		case err == nil && hash != p.RequestHash:
			return fmt.Errorf("idempotency key %q: %w", p.Key, job.ErrIdempotencyMismatch)
		case err == nil:
			out = &store.IdempotentInsertResult{Response: store.StoredResponse{Status: status, Body: body}, Replayed: true}
			return nil
		case !isNoRows(err):
			return fmt.Errorf("look up idempotency key: %w", err)
		}
		res, err := w.insert(ctx, p.Jobs, now)
		if err != nil {
			return err
		}
		resp, err := p.Render(res)
		if err != nil {
			return err
		}
		if _, err := s.stmts.idemRecord.ExecContext(ctx, p.Key, p.RequestHash, resp.Status, resp.Body, micros(now)); err != nil {
			return fmt.Errorf("record idempotency key: %w", err)
		}
		out = &store.IdempotentInsertResult{Results: res, Response: resp}
		return nil
	})
	return out, err
}

// PruneIdempotencyKeys implements store.Store.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	n := 0
	err := s.write(ctx, func(w *wtx) error {
		res, err := s.wconn.ExecContext(w.ctx, `DELETE FROM idempotency_keys WHERE key IN (
			SELECT key FROM idempotency_keys WHERE created_at < ? ORDER BY created_at LIMIT ?)`,
			micros(job.Truncate(before)), max(limit, 1))
		if err != nil {
			return err
		}
		k, err := res.RowsAffected()
		n = int(k)
		return err
	})
	return n, err
}

// allPlain reports whether no job is unique or has dependencies.
func allPlain(ins []*job.Insert) bool {
	for _, in := range ins {
		if in.UniqueKey != "" || len(in.DependsOn) > 0 {
			return false
		}
	}
	return true
}

// insertRowsPerStmt is how many jobs one multi-row INSERT carries.
const insertRowsPerStmt = 64

// insertCols are the columns every insert sets, in the order of
// insertArgs.
const insertCols = `state, queue, kind, priority, scheduled_at, args, max_attempts, timeout_us,
	unique_key, unique_by_period, tags, metadata, depends_on, pending_deps, created_at, created_by`

const insertColCount = 16

// insertArgs appends the values of insertCols for one job.
func insertArgs(dst []any, in *job.Insert, state job.State, unmet int) ([]any, error) {
	tags, err := jsonOrNil(in.Tags)
	if err != nil {
		return nil, err
	}
	deps, err := jsonOrNil(in.DependsOn)
	if err != nil {
		return nil, err
	}
	byPeriod := 0
	if in.UniqueByPeriod {
		byPeriod = 1
	}
	return append(dst, string(state), in.Queue, in.Kind, in.Priority, micros(in.ScheduledAt),
		[]byte(in.Args), in.MaxAttempts, in.Timeout.Microseconds(), nullString(in.UniqueKey),
		byPeriod, tags, nullBytes(in.Metadata), deps, unmet, micros(in.CreatedAt), nullString(in.CreatedBy)), nil
}

// insertPlain inserts jobs that are neither unique nor dependent, many
// rows per statement. Their ids are consecutive: the writer is the only
// one and AUTOINCREMENT hands out max+1 to each row in order.
func (w *wtx) insertPlain(ctx context.Context, ins []*job.Insert, now time.Time, out []store.InsertResult) error {
	states := make([]job.State, len(ins))
	for k, in := range ins {
		states[k] = job.InitialState(in.ScheduledAt, now, false)
	}
	if err := w.insertRows(ctx, ins, states, out); err != nil {
		return err
	}
	for k, in := range ins {
		w.move(in.Queue, "", states[k])
	}
	return nil
}

// insertRows inserts plain jobs in the given states, many rows per
// statement, filling out; it records no count changes.
func (w *wtx) insertRows(ctx context.Context, ins []*job.Insert, states []job.State, out []store.InsertResult) error {
	for len(ins) > 0 {
		n := min(len(ins), insertRowsPerStmt)
		st, err := w.s.insertStmt(ctx, n)
		if err != nil {
			return err
		}
		args := make([]any, 0, n*insertColCount)
		for k, in := range ins[:n] {
			if args, err = insertArgs(args, in, states[k], 0); err != nil {
				return err
			}
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
		last, err := res.LastInsertId()
		if err != nil {
			return err
		}
		for k, in := range ins[:n] {
			id := last - int64(n-1-k)
			out[k] = store.InsertResult{Job: store.NewJob(id, in, states[k])}
		}
		ins, out, states = ins[n:], out[n:], states[n:]
	}
	return nil
}

// pendingPlain is one deferred plain insert (see Store.Insert).
type pendingPlain struct {
	o    *op
	jobs []*job.Insert
	now  time.Time
	out  []store.InsertResult
}

// flushPlain runs the deferred plain inserts of the group so far as one
// run of multi-row INSERTs, in their order, and credits each request's
// count changes to it. An error fails the whole group.
func (w *wtx) flushPlain() error {
	if len(w.pending) == 0 {
		return nil
	}
	var ins []*job.Insert
	var states []job.State
	for _, p := range w.pending {
		for _, in := range p.jobs {
			ins = append(ins, in)
			states = append(states, job.InitialState(in.ScheduledAt, p.now, false))
		}
	}
	res := make([]store.InsertResult, len(ins))
	if err := w.insertRows(w.ctx, ins, states, res); err != nil {
		return err
	}
	k := 0
	for _, p := range w.pending {
		for i, in := range p.jobs {
			p.out[i] = res[k]
			p.o.deltas = append(p.o.deltas, countDelta{in.Queue, states[k], 1})
			k++
		}
	}
	w.pending = w.pending[:0]
	return nil
}

// insertStmt returns the prepared INSERT of n rows.
func (s *Store) insertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	if st := s.stmts.inserts[n]; st != nil {
		return st, nil
	}
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", insertColCount), ",") + ")"
	q := "INSERT INTO jobs (" + insertCols + ") VALUES " + strings.TrimSuffix(strings.Repeat(row+",", n), ",") //nolint:gosec // G202: constants and placeholders only; values are bound
	st, err := s.wconn.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare insert of %d rows: %w", n, err)
	}
	s.stmts.inserts[n] = st
	return st, nil
}

func (w *wtx) insertOne(ctx context.Context, in *job.Insert, now time.Time, idx int, many bool) (store.InsertResult, error) {
	st := w.s.stmts
	if in.UniqueKey != "" {
		existing, err := queryJobs(ctx, st.byUnique, in.UniqueKey)
		if err != nil {
			return store.InsertResult{}, fmt.Errorf("look up unique key: %w", err)
		}
		if len(existing) > 0 {
			existing[0].LeaseToken = ""
			return store.InsertResult{Job: existing[0], Duplicate: true}, nil
		}
	}
	var unmet []job.ID
	for i, dep := range in.DependsOn {
		var state string
		err := st.depState.QueryRowContext(ctx, int64(dep)).Scan(&state)
		if isNoRows(err) {
			field := fmt.Sprintf("depends_on[%d]", i)
			if many {
				field = fmt.Sprintf("jobs[%d].%s", idx, field)
			}
			return store.InsertResult{}, &job.ValidationError{Field: field, Message: fmt.Sprintf("job %d does not exist", dep)}
		}
		if err != nil {
			return store.InsertResult{}, fmt.Errorf("look up dependency %d: %w", dep, err)
		}
		if job.State(state) != job.StateCompleted {
			unmet = append(unmet, dep)
		}
	}
	state := job.InitialState(in.ScheduledAt, now, len(unmet) > 0)
	args, err := insertArgs(make([]any, 0, insertColCount), in, state, len(unmet))
	if err != nil {
		return store.InsertResult{}, err
	}
	st1, err := w.s.insertStmt(ctx, 1)
	if err != nil {
		return store.InsertResult{}, err
	}
	res, err := st1.ExecContext(ctx, args...)
	if err != nil {
		if isConstraint(err) {
			return store.InsertResult{}, fmt.Errorf("insert job: %w: %v", job.ErrConflict, err) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
		}
		return store.InsertResult{}, fmt.Errorf("insert job: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return store.InsertResult{}, err
	}
	for _, dep := range unmet {
		if _, err := st.insertDep.ExecContext(ctx, int64(dep), id); err != nil {
			return store.InsertResult{}, fmt.Errorf("record dependency: %w", err)
		}
		w.s.depsRows++
	}
	w.move(in.Queue, "", state)
	return store.InsertResult{Job: store.NewJob(id, in, state)}, nil
}

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, p store.LeaseParams) ([]*job.Job, error) {
	if p.Limit <= 0 || len(p.Queues) == 0 {
		return nil, nil
	}
	var out []*job.Job
	err := s.write(ctx, func(w *wtx) error {
		var err error
		out, err = w.lease(p, nil)
		return err
	})
	return out, err
}

// lease leases up to p.Limit jobs of p.Queues in the group transaction.
// Queues with no committed available job are skipped without a query,
// unless gained says that this transaction made jobs available there
// (a hand-off to a parked lease, see handoff.go).
func (w *wtx) lease(p store.LeaseParams, gained map[string]int) ([]*job.Job, error) {
	s := w.s
	ctx := w.ctx
	st := s.stmts
	now := job.Truncate(p.Now)
	exp := micros(now.Add(p.LeaseFor))
	worker := store.CleanText(p.Worker)
	queues := make([]string, 0, len(p.Queues))
	for _, q := range p.Queues {
		if !s.paused[q] && (s.counts[q][job.StateAvailable] > 0 || gained[q] > 0) && !slices.Contains(queues, q) {
			queues = append(queues, q)
		}
	}
	var (
		jobs []*job.Job
		err  error
	)
	switch len(queues) {
	case 0:
		return nil, nil
	case 1:
		jobs, err = queryJobs(ctx, st.leaseQueue, micros(now), worker, exp, queues[0], p.Limit)
	default:
		ids, cerr := w.candidates(ctx, queues, p.Limit)
		if cerr != nil {
			return nil, cerr
		}
		idj, _ := json.Marshal(ids)
		jobs, err = queryJobs(ctx, st.leaseIDs, micros(now), worker, exp, string(idj))
	}
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	store.SortFetchOrder(jobs)
	for _, j := range jobs {
		w.move(j.Queue, job.StateAvailable, job.StateRunning)
	}
	return jobs, nil
}

// candidates returns the ids of the first limit available jobs across
// queues in fetch order, merging each queue's own first limit.
func (w *wtx) candidates(ctx context.Context, queues []string, limit int) ([]int64, error) {
	type cand struct {
		id, prio, sched int64
	}
	var all []cand
	for _, q := range queues {
		rows, err := w.s.stmts.candidates.QueryContext(ctx, q, limit)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c cand
			if err := rows.Scan(&c.id, &c.prio, &c.sched); err != nil {
				rows.Close()
				return nil, err
			}
			all = append(all, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(all, func(a, b cand) int {
		switch {
		case a.prio != b.prio:
			return int(a.prio - b.prio)
		case a.sched != b.sched:
			if a.sched < b.sched {
				return -1
			}
			return 1
		default:
			if a.id < b.id {
				return -1
			}
			return 1
		}
	})
	ids := make([]int64, 0, min(limit, len(all)))
	for _, c := range all[:min(limit, len(all))] {
		ids = append(ids, c.id)
	}
	return ids, nil
}

// settleError explains why a settle by (id, token) matched no running job:
// the job is missing, the token already settled it the same way (an
// idempotent repeat: the job is returned), or the lease is stale.
func (w *wtx) settleError(ctx context.Context, id job.ID, token, how string) (*job.Job, error) {
	var state string
	var tok, settled *string
	err := w.s.stmts.settleState.QueryRowContext(ctx, int64(id)).Scan(&state, &tok, &settled)
	if isNoRows(err) {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if tok != nil && *tok == token && settled != nil && *settled == how {
		j, err := w.get(ctx, id)
		if err != nil {
			return nil, err
		}
		j.LeaseToken = ""
		return j, nil
	}
	return nil, fmt.Errorf("job %d is %s: %w", id, state, job.ErrLeaseLost)
}

func (w *wtx) get(ctx context.Context, id job.ID) (*job.Job, error) {
	j, err := scanJob(w.s.stmts.get.QueryRowContext(ctx, int64(id)))
	if isNoRows(err) {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	return j, err
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, p store.HeartbeatParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		jobs, err := queryJobs(ctx, s.stmts.heartbeat, micros(now), int64(p.ID), p.LeaseToken, micros(now.Add(p.LeaseFor)))
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			_, err := w.settleError(ctx, p.ID, p.LeaseToken, "\x00never")
			return err
		}
		out = jobs[0]
		return nil
	})
	return out, err
}

// Complete implements store.Store.
func (s *Store) Complete(ctx context.Context, p store.CompleteParams) ([]store.SettleResult, error) {
	now := job.Truncate(p.Now)
	out := make([]store.SettleResult, len(p.Jobs))
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		// Jobs without output complete in one statement; the rest, and
		// those the statement did not match (to learn why), one by one.
		var plain []int
		for i, c := range p.Jobs {
			if len(c.Output) == 0 {
				plain = append(plain, i)
			}
		}
		done := make([]bool, len(p.Jobs))
		if len(plain) > 1 {
			if err := w.completeBatch(ctx, p.Jobs, plain, now, out, done); err != nil {
				return err
			}
		}
		for i, c := range p.Jobs {
			if done[i] {
				continue
			}
			j, err := w.completeOne(ctx, c, now)
			out[i] = store.SettleResult{Job: j, Err: err}
			if err != nil && !store.IsSettleError(err) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// completeBatch completes the jobs p[idx...] (which have no output) in one
// statement, filling out and done for those it matched.
func (w *wtx) completeBatch(ctx context.Context, p []store.CompleteJob, idx []int, now time.Time, out []store.SettleResult, done []bool) error {
	pairs := make([][2]any, len(idx))
	pos := make(map[job.ID]int, len(idx))
	for k, i := range idx {
		pairs[k] = [2]any{int64(p[i].ID), p[i].LeaseToken}
		pos[p[i].ID] = i
	}
	arg, err := json.Marshal(pairs)
	if err != nil {
		return err
	}
	rows, err := w.s.stmts.completeMany.QueryContext(ctx, micros(now), string(arg))
	if err != nil {
		return fmt.Errorf("complete jobs: %w", err)
	}
	jobs, err := scanSettled(rows)
	if err != nil {
		return fmt.Errorf("complete jobs: %w", err)
	}
	for _, j := range jobs {
		i, ok := pos[j.ID]
		if !ok || done[i] {
			continue
		}
		j.LeaseToken = ""
		w.move(j.Queue, job.StateRunning, job.StateCompleted)
		if w.s.depsRows > 0 {
			if err := w.resolveDependants(ctx, j.ID, now); err != nil {
				return err
			}
		}
		out[i] = store.SettleResult{Job: j}
		done[i] = true
	}
	return nil
}

func (w *wtx) completeOne(ctx context.Context, c store.CompleteJob, now time.Time) (*job.Job, error) {
	rows, err := w.s.stmts.complete.QueryContext(ctx, micros(now), nullBytes(c.Output), int64(c.ID), c.LeaseToken)
	if err != nil {
		return nil, fmt.Errorf("complete job %d: %w", c.ID, err)
	}
	jobs, err := scanSettled(rows)
	if err != nil {
		return nil, fmt.Errorf("complete job %d: %w", c.ID, err)
	}
	if len(jobs) == 0 {
		return w.settleError(ctx, c.ID, c.LeaseToken, "complete")
	}
	j := jobs[0]
	j.LeaseToken = ""
	w.move(j.Queue, job.StateRunning, job.StateCompleted)
	if w.s.depsRows > 0 {
		if err := w.resolveDependants(ctx, j.ID, now); err != nil {
			return nil, err
		}
	}
	return j, nil
}

// resolveDependants counts one dependency done for each job that waits on
// id, making it ready when it was the last.
func (w *wtx) resolveDependants(ctx context.Context, id job.ID, now time.Time) error {
	st := w.s.stmts
	rows, err := st.dependants.QueryContext(ctx, int64(id))
	if err != nil {
		return err
	}
	var waiting []int64
	for rows.Next() {
		var d int64
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return err
		}
		waiting = append(waiting, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if len(waiting) == 0 {
		return nil
	}
	if _, err := st.dropDeps.ExecContext(ctx, int64(id)); err != nil {
		return err
	}
	w.depsDone(int64(len(waiting)))
	for _, d := range waiting {
		var q, state string
		err := st.depDone.QueryRowContext(ctx, micros(now), d).Scan(&q, &state)
		if isNoRows(err) {
			continue
		}
		if err != nil {
			return err
		}
		w.move(q, job.StatePending, job.State(state))
		if job.State(state) == job.StateAvailable {
			w.ready(q)
		}
	}
	return nil
}

// runningJob reads job id for a settle by token, or explains why not.
func (w *wtx) runningJob(ctx context.Context, id job.ID, token, how string) (*job.Job, bool, error) {
	j, err := w.get(ctx, id)
	if err != nil {
		return nil, false, err
	}
	if j.State == job.StateRunning && j.LeaseToken == token {
		return j, true, nil
	}
	done, err := w.settleError(ctx, id, token, how)
	return done, false, err
}

// Fail implements store.Store.
func (s *Store) Fail(ctx context.Context, p store.FailParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		j, live, err := w.runningJob(ctx, p.ID, p.LeaseToken, "fail")
		if err != nil || !live {
			out = j
			return err
		}
		next, retryAt := store.FailOutcome(j, p, now)
		entry, err := store.ErrorEntry(j.Attempt, now, p.Message, p.Detail)
		if err != nil {
			return err
		}
		out, err = w.settle(ctx, j, next, retryAt, now, entry, "fail")
		return err
	})
	return out, err
}

// settle moves running job j to state next, appending entry (when set) to
// its error history and recording how the lease settled.
func (w *wtx) settle(ctx context.Context, j *job.Job, next job.State, sched, now time.Time, entry, how string) (*job.Job, error) {
	var finalized any
	if next.Final() {
		finalized = micros(now)
	}
	sched = store.NextScheduledAt(j, next, sched, now)
	release := !job.HoldsUnique(next, true)
	var errArg any
	if entry != "" {
		errArg = entry
	}
	attemptDelta := 0
	if how == "snooze" {
		attemptDelta = -1
	}
	rows, err := w.s.wconn.QueryContext(ctx, `UPDATE jobs SET state = ?1, scheduled_at = ?2,
		finalized_at = ?3, lease_expires_at = NULL, settled = ?4, attempt = attempt + ?5,
		errors = CASE WHEN ?6 IS NULL THEN errors ELSE json_insert(coalesce(errors, '[]'), '$[#]', json(?6)) END,
		unique_key = CASE WHEN ?7 THEN NULL ELSE unique_key END
		WHERE id = ?8 RETURNING `+jobCols,
		string(next), micros(sched), finalized, nullString(how), attemptDelta, errArg, release, int64(j.ID))
	if err != nil {
		return nil, fmt.Errorf("settle job %d: %w", j.ID, err)
	}
	jobs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("settle job %d: %w", j.ID, err)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("job %d: %w", j.ID, job.ErrNotFound)
	}
	w.move(j.Queue, j.State, next)
	out := jobs[0]
	out.LeaseToken = ""
	return out, nil
}

// Snooze implements store.Store.
func (s *Store) Snooze(ctx context.Context, p store.SnoozeParams) (*job.Job, error) {
	if p.Delay < 0 {
		return nil, &job.ValidationError{Field: "delay", Message: "must not be negative"}
	}
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		j, live, err := w.runningJob(ctx, p.ID, p.LeaseToken, "snooze")
		if err != nil || !live {
			out = j
			return err
		}
		at := job.Truncate(now.Add(p.Delay))
		out, err = w.settle(ctx, j, job.ReadyState(at, now), at, now, "", "snooze")
		return err
	})
	return out, err
}

// Cancel implements store.Store.
func (s *Store) Cancel(ctx context.Context, p store.CancelParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		j, err := w.get(ctx, p.ID)
		if err != nil {
			return err
		}
		if j.State == job.StateCancelled {
			j.LeaseToken = ""
			out = j
			return nil
		}
		if !job.CanCancel(j.State) {
			return fmt.Errorf("cancel job %d: it is %s: %w", p.ID, j.State, job.ErrInvalidState)
		}
		if j.State == job.StatePending {
			if err := w.dropOwnDeps(ctx, j.ID); err != nil {
				return err
			}
		}
		out, err = w.settle(ctx, j, job.StateCancelled, j.ScheduledAt, now, "", "")
		return err
	})
	return out, err
}

// depsDone lowers the count of dependency rows once the commit is durable.
// Increments apply at once: the count may run high, which costs a lookup,
// but never low, which would skip resolving a dependant.
func (w *wtx) depsDone(n int64) {
	w.after(func() { w.s.depsRows -= n })
}

// dropOwnDeps forgets the dependencies that job id waits on.
func (w *wtx) dropOwnDeps(ctx context.Context, id job.ID) error {
	res, err := w.s.wconn.ExecContext(ctx, `DELETE FROM job_deps WHERE job_id = ?`, int64(id))
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	w.depsDone(n)
	return nil
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, p store.RetryParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		j, err := w.get(ctx, p.ID)
		if err != nil {
			return err
		}
		j.LeaseToken = ""
		if j.State == job.StateAvailable {
			out = j
			return nil
		}
		if !job.CanRetry(j.State) {
			return fmt.Errorf("retry job %d: it is %s: %w", p.ID, j.State, job.ErrInvalidState)
		}
		rows, err := w.s.wconn.QueryContext(ctx, `UPDATE jobs SET state = 'available', scheduled_at = ?1,
			finalized_at = NULL, max_attempts = max(max_attempts, attempt + 1), settled = NULL,
			lease_token = NULL, lease_expires_at = NULL
			WHERE id = ?2 RETURNING `+jobCols, micros(now), int64(p.ID))
		if err != nil {
			return err
		}
		jobs, err := collect(rows)
		if err != nil {
			return err
		}
		w.move(j.Queue, j.State, job.StateAvailable)
		out = jobs[0]
		out.LeaseToken = ""
		return nil
	})
	return out, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, p store.DeleteParams) error {
	return s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		j, err := w.get(ctx, p.ID)
		if err != nil {
			return err
		}
		if !job.CanDelete(j.State) {
			return fmt.Errorf("delete job %d: it is %s, cancel it first: %w", p.ID, j.State, job.ErrInvalidState)
		}
		if j.State == job.StatePending {
			if err := w.dropOwnDeps(ctx, j.ID); err != nil {
				return err
			}
		}
		if _, err := w.s.wconn.ExecContext(ctx, `DELETE FROM jobs WHERE id = ?`, int64(p.ID)); err != nil {
			return err
		}
		w.move(j.Queue, j.State, "")
		return nil
	})
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id job.ID) (*job.Job, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	j, err := scanJob(s.rdb.QueryRowContext(ctx, `SELECT `+jobCols+` FROM jobs WHERE id = ?`, int64(id)))
	if isNoRows(err) {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	j.LeaseToken = ""
	return j, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, p store.ListParams) (*store.ListResult, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	limit := p.Limit
	if limit <= 0 || limit > store.MaxListLimit {
		limit = store.MaxListLimit
	}
	var where []string
	var args []any
	in := func(col string, vals []string) {
		if len(vals) == 0 {
			return
		}
		where = append(where, col+" IN ("+strings.TrimSuffix(strings.Repeat("?,", len(vals)), ",")+")")
		for _, v := range vals {
			args = append(args, v)
		}
	}
	states := make([]string, len(p.States))
	for i, st := range p.States {
		states[i] = string(st)
	}
	in("state", states)
	if len(states) > 0 && !slices.Contains(states, string(job.StateAvailable)) {
		// Lets SQLite use the partial index jobs_state (see schema.go).
		where = append(where, "state <> 'available'")
	}
	in("kind", p.Kinds)
	in("queue", p.Queues)
	if p.CreatedBy != "" {
		where = append(where, "created_by = ?")
		args = append(args, p.CreatedBy)
	}
	if p.Tag != "" {
		where = append(where, "EXISTS (SELECT 1 FROM json_each(jobs.tags) WHERE value = ?)")
		args = append(args, p.Tag)
	}
	order := "ASC"
	if p.Desc {
		order = "DESC"
	}
	if p.After != 0 {
		if p.Desc {
			where = append(where, "id < ?")
		} else {
			where = append(where, "id > ?")
		}
		args = append(args, int64(p.After))
	}
	q := `SELECT ` + jobCols + ` FROM jobs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ") //nolint:gosec // G202: constant fragments with placeholders; values are bound
	}
	q += " ORDER BY id " + order + " LIMIT ?"
	args = append(args, limit+1)
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	jobs, err := collect(rows)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return store.Page(jobs, limit), nil
}

// Promote implements store.Store.
func (s *Store) Promote(ctx context.Context, p store.PromoteParams) (map[string]int, error) {
	now := job.Truncate(p.Now)
	out := map[string]int{}
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		clear(out)
		rows, err := s.wconn.QueryContext(ctx, `SELECT id, queue, state FROM jobs
			WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= ? ORDER BY scheduled_at LIMIT ?`,
			micros(now), max(p.Limit, 1))
		if err != nil {
			return err
		}
		var ids []int64
		type qs struct{ q, s string }
		var moved []qs
		for rows.Next() {
			var id int64
			var m qs
			if err := rows.Scan(&id, &m.q, &m.s); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
			moved = append(moved, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		idj, _ := json.Marshal(ids)
		if _, err := s.wconn.ExecContext(ctx, `UPDATE jobs SET state = 'available'
			WHERE id IN (SELECT value FROM json_each(?))`, string(idj)); err != nil {
			return err
		}
		for _, m := range moved {
			w.move(m.q, job.State(m.s), job.StateAvailable)
			out[m.q]++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Rescue implements store.Store.
func (s *Store) Rescue(ctx context.Context, p store.RescueParams) ([]*job.Job, error) {
	now := job.Truncate(p.Now)
	var out []*job.Job
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		out = nil
		rows, err := s.wconn.QueryContext(ctx, `SELECT `+jobCols+` FROM jobs
			WHERE state = 'running' AND state <> 'available' AND lease_expires_at < ? ORDER BY id LIMIT ?`,
			micros(now), max(p.Limit, 1))
		if err != nil {
			return err
		}
		expired, err := collect(rows)
		if err != nil {
			return err
		}
		for _, j := range expired {
			msg, next, at := store.RescueOutcome(j, now)
			entry, err := store.ErrorEntry(j.Attempt, now, msg, "")
			if err != nil {
				return err
			}
			r, err := w.settle(ctx, j, next, at, now, entry, "rescue")
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	return out, err
}

// Prune implements store.Store.
func (s *Store) Prune(ctx context.Context, p store.PruneParams) (int, error) {
	states := store.PruneStates(p.States)
	if len(states) == 0 {
		return 0, nil
	}
	n := 0
	err := s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		n = 0
		for _, st := range states {
			// Finished jobs are scanned in id order, a window of Limit at a
			// time; ids roughly follow finalization, so the oldest come
			// first. A window whose jobs are all still within retention
			// ends this pass, and the next pass tries again.
			rows, err := s.wconn.QueryContext(ctx, `DELETE FROM jobs WHERE id IN (
				SELECT id FROM (SELECT id, finalized_at FROM jobs
					WHERE state = ?1 AND state <> 'available' ORDER BY id LIMIT ?2)
				WHERE finalized_at < ?3) RETURNING queue, state`, st, max(p.Limit, 1), micros(job.Truncate(p.Before)))
			if err != nil {
				return err
			}
			for rows.Next() {
				var q, st string
				if err := rows.Scan(&q, &st); err != nil {
					rows.Close()
					return err
				}
				w.move(q, job.State(st), "")
				n++
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// SetQueuePaused implements store.Store.
func (s *Store) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	if err := job.ValidateName(p.Queue); err != nil {
		return &job.ValidationError{Field: "queue", Message: err.Error()}
	}
	return s.write(ctx, func(w *wtx) error {
		ctx := w.ctx
		_, err := s.wconn.ExecContext(ctx, `INSERT INTO queues (name, paused, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at`,
			p.Queue, p.Paused, micros(job.Truncate(p.Now)))
		if err != nil {
			return err
		}
		w.after(func() {
			s.mu.Lock()
			s.paused[p.Queue] = p.Paused
			s.mu.Unlock()
		})
		return nil
	})
}

// Queues implements store.Store.
func (s *Store) Queues(ctx context.Context) ([]store.QueueInfo, error) {
	if s.closed.Load() {
		return nil, fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.QueueInfo
	seen := map[string]bool{}
	add := func(name string) {
		if seen[name] {
			return
		}
		seen[name] = true
		counts := map[job.State]int{}
		for st, n := range s.counts[name] {
			counts[st] = n
		}
		out = append(out, store.QueueInfo{Name: name, Paused: s.paused[name], Counts: counts})
	}
	for name, m := range s.counts {
		if len(m) > 0 {
			add(name)
		}
	}
	for name := range s.paused {
		add(name)
	}
	slices.SortFunc(out, func(a, b store.QueueInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
