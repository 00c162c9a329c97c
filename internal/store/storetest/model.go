package storetest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// ModelFactory gives RunModel one store's storage. RunModel calls Reset
// before every check, with no store open, then Open; a crash-restart
// action closes the store and calls Open again on the same storage.
type ModelFactory struct {
	// Reset empties the storage (or moves to fresh storage) for a check.
	Reset func(ctx context.Context) error
	// Open opens a store on the current storage.
	Open func(ctx context.Context) (store.Store, error)
	// Reuse keeps the store open from one check to the next (Reset then
	// runs with it open), for stores that are slow to open.
	Reuse bool
}

// setChecks guards the rapid.checks flag, set once per test binary.
var setChecks sync.Once

// RunModel runs a model-based property test against the stores f makes:
// random sequences of enqueue, lease, heartbeat, complete, fail, clock,
// promote/rescue and crash-restart actions, each checked against a small
// reference model of the jobs, for checks checks (unless -rapid.checks or
// RAPID_CHECKS says otherwise). rapid prints the failing action sequence,
// shrunk; the check logs the model and the store on a mismatch.
//
// RunModel sets the rapid.checks flag, so no other rapid test of the
// binary may run in parallel with it.
func RunModel(t *testing.T, f ModelFactory, checks int) {
	t.Helper()
	setChecks.Do(func() {
		explicit := false
		flag.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == "rapid.checks" })
		if _, env := os.LookupEnv("RAPID_CHECKS"); !explicit && !env {
			if err := flag.Set("rapid.checks", strconv.Itoa(checks)); err != nil {
				t.Fatalf("set rapid.checks: %v", err)
			}
		}
	})
	ctx := t.Context()
	var open store.Store // kept between checks when f.Reuse
	t.Cleanup(func() {
		if open != nil {
			_ = open.Close()
		}
	})
	rapid.Check(t, func(rt *rapid.T) {
		if err := f.Reset(ctx); err != nil {
			rt.Fatalf("Reset: %v", err)
		}
		if open == nil {
			s, err := f.Open(ctx)
			if err != nil {
				rt.Fatalf("Open: %v", err)
			}
			open = s
		}
		m := &modelRun{rt: rt, ctx: ctx, f: f, s: open, now: T0, jobs: map[job.ID]*mjob{}}
		defer func() {
			open = m.s
			if !f.Reuse && open != nil {
				_ = open.Close()
				open = nil
			}
		}()
		rt.Repeat(map[string]func(*rapid.T){
			"enqueue":   m.enqueue,
			"lease":     m.lease,
			"heartbeat": m.heartbeat,
			"complete":  m.complete,
			"fail":      m.fail,
			"advance":   m.advance,
			"toExpiry":  m.toExpiry,
			"maintain":  m.maintain,
			"restart":   m.restart,
			"":          m.check,
		})
	})
}

// mjob is the model of one job.
type mjob struct {
	id          job.ID
	priority    int
	state       job.State
	attempt     int
	maxAttempts int
	scheduledAt time.Time
	leaseExp    time.Time // while running
	// token is the last lease's token; settled says how it settled
	// ("" while the lease lives, else "complete", "fail" or "rescue").
	token   string
	settled string
	tokens  []string // every token the job's leases had
	errors  []string // messages of the error history
}

func (j *mjob) live(token string) bool {
	return j.state == job.StateRunning && j.settled == "" && token == j.token
}

func (j *mjob) String() string {
	s := fmt.Sprintf("job %d: %s attempt %d/%d prio %d sched %s errors %d", j.id, j.state, j.attempt, j.maxAttempts,
		j.priority, j.scheduledAt.Format("15:04:05.000000"), len(j.errors))
	if j.state == job.StateRunning {
		s += " lease until " + j.leaseExp.Format("15:04:05.000000")
	}
	return s
}

type modelRun struct {
	rt   *rapid.T
	ctx  context.Context
	f    ModelFactory
	s    store.Store
	now  time.Time
	jobs map[job.ID]*mjob
	ids  []job.ID // in insert order
	// touched are jobs to Get in the next check.
	touched []job.ID
}

// fatalf logs the model and the store, then fails the check.
func (m *modelRun) fatalf(format string, args ...any) {
	m.rt.Helper()
	m.rt.Logf("model clock %s", m.now.Format(time.RFC3339Nano))
	for _, id := range m.ids {
		m.rt.Logf("model %s", m.jobs[id])
	}
	if m.s != nil {
		if res, err := m.s.List(m.ctx, store.ListParams{Limit: store.MaxListLimit}); err == nil {
			for _, j := range res.Jobs {
				m.rt.Logf("store job %d: %s attempt %d/%d prio %d sched %s errors %d lease %v",
					j.ID, j.State, j.Attempt, j.MaxAttempts, j.Priority, j.ScheduledAt.Format("15:04:05.000000"), len(j.Errors), fmtTime(j.LeaseExpiresAt))
			}
		}
	}
	m.rt.Fatalf(format, args...)
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format("15:04:05.000000")
}

// pick draws one of the model's jobs, or nil when there are none.
func (m *modelRun) pick(t *rapid.T, label string) *mjob {
	if len(m.ids) == 0 {
		return nil
	}
	return m.jobs[rapid.SampledFrom(m.ids).Draw(t, label)]
}

func (m *modelRun) enqueue(t *rapid.T) {
	n := rapid.IntRange(1, 5).Draw(t, "n")
	specs := make([]*job.Insert, n)
	for i := range specs {
		sp := spec("model", withMaxAttempts(rapid.IntRange(1, 3).Draw(t, "max_attempts")),
			withPriority(rapid.IntRange(job.DefaultPriority-1, job.DefaultPriority+1).Draw(t, "priority")))
		switch rapid.IntRange(0, 2).Draw(t, "when") {
		case 1: // in the future
			sp.RunAt = m.now.Add(time.Duration(rapid.Int64Range(1, 20_000_000).Draw(t, "run_in_us")) * time.Microsecond)
		case 2: // in the past
			sp.RunAt = m.now.Add(-time.Duration(rapid.Int64Range(0, 20_000_000).Draw(t, "run_ago_us")) * time.Microsecond)
		}
		in, err := sp.Prepare(m.now, job.Limits{}, "")
		if err != nil {
			m.fatalf("Prepare: %v", err)
		}
		specs[i] = in
	}
	res, err := m.s.Insert(m.ctx, store.InsertParams{Now: m.now, Jobs: specs})
	if err != nil {
		m.fatalf("Insert: %v", err)
	}
	if len(res) != n {
		m.fatalf("Insert returned %d results for %d jobs", len(res), n)
	}
	for i, r := range res {
		if r.Duplicate || r.Job == nil {
			m.fatalf("Insert result %d: duplicate %v job %v", i, r.Duplicate, r.Job)
		}
		if _, ok := m.jobs[r.Job.ID]; ok {
			m.fatalf("Insert returned id %d twice", r.Job.ID)
		}
		if len(m.ids) > 0 && r.Job.ID <= m.ids[len(m.ids)-1] {
			m.fatalf("Insert returned id %d after id %d: ids must increase", r.Job.ID, m.ids[len(m.ids)-1])
		}
		mj := &mjob{id: r.Job.ID, priority: specs[i].Priority, maxAttempts: specs[i].MaxAttempts,
			scheduledAt: specs[i].ScheduledAt, state: job.InitialState(specs[i].ScheduledAt, m.now, false)}
		m.jobs[mj.id] = mj
		m.ids = append(m.ids, mj.id)
		m.compareJob("Insert", r.Job, mj)
	}
}

func (m *modelRun) lease(t *rapid.T) {
	limit := rapid.IntRange(1, 4).Draw(t, "limit")
	leaseFor := time.Duration(rapid.IntRange(5, 60).Draw(t, "lease_for_s")) * time.Second
	var want []*mjob
	for _, id := range m.ids {
		if j := m.jobs[id]; j.state == job.StateAvailable {
			want = append(want, j)
		}
	}
	slices.SortFunc(want, func(a, b *mjob) int {
		switch {
		case a.priority != b.priority:
			return a.priority - b.priority
		case !a.scheduledAt.Equal(b.scheduledAt):
			return a.scheduledAt.Compare(b.scheduledAt)
		default:
			return int(a.id - b.id)
		}
	})
	want = want[:min(limit, len(want))]
	got, err := m.s.Lease(m.ctx, store.LeaseParams{Now: m.now, Queues: []string{job.DefaultQueue}, Limit: limit, LeaseFor: leaseFor, Worker: "model"})
	if err != nil {
		m.fatalf("Lease: %v", err)
	}
	gotIDs := ids(got)
	wantIDs := make([]job.ID, len(want))
	for i, j := range want {
		wantIDs[i] = j.id
	}
	if !sameIDs(gotIDs, wantIDs) {
		m.fatalf("Lease(limit %d) returned %v, want %v (fetch order: priority, scheduled_at, id)", limit, gotIDs, wantIDs)
	}
	for i, g := range got {
		mj := want[i]
		if g.LeaseToken == "" {
			m.fatalf("Lease returned job %d without a token", g.ID)
		}
		for _, o := range m.jobs {
			if slices.Contains(o.tokens, g.LeaseToken) {
				m.fatalf("Lease returned job %d with token %q already used by job %d", g.ID, g.LeaseToken, o.id)
			}
		}
		mj.state = job.StateRunning
		mj.attempt++
		mj.token, mj.settled = g.LeaseToken, ""
		mj.tokens = append(mj.tokens, g.LeaseToken)
		mj.leaseExp = m.now.Add(leaseFor)
		m.compareJob("Lease", g, mj)
		if g.LeaseExpiresAt == nil || !g.LeaseExpiresAt.Equal(mj.leaseExp) {
			m.fatalf("Lease: job %d lease expires %s, want %s", g.ID, fmtTime(g.LeaseExpiresAt), fmtTime(&mj.leaseExp))
		}
	}
}

// token draws a token to settle j with: its live one, one of its old
// ones, another job's, or an unknown one.
func (m *modelRun) token(t *rapid.T, j *mjob) string {
	switch rapid.IntRange(0, 3).Draw(t, "token") {
	case 0:
		return j.token
	case 1:
		if len(j.tokens) > 0 {
			return rapid.SampledFrom(j.tokens).Draw(t, "old_token")
		}
	case 2:
		if o := m.pick(t, "other_job"); o != nil && o.token != "" {
			return o.token
		}
	}
	return fmt.Sprintf("%032x", rapid.Uint64().Draw(t, "random_token"))
}

// target draws a job id and a token: usually a job of the model, sometimes
// an unknown id.
func (m *modelRun) target(t *rapid.T) (job.ID, *mjob, string) {
	j := m.pick(t, "job")
	if j == nil || rapid.IntRange(0, 9).Draw(t, "unknown_id") == 0 {
		var last job.ID
		if len(m.ids) > 0 {
			last = m.ids[len(m.ids)-1]
		}
		return last + 1000, nil, fmt.Sprintf("%032x", rapid.Uint64().Draw(t, "random_token"))
	}
	return j.id, j, m.token(t, j)
}

func (m *modelRun) wantErr(op string, err, target error) {
	m.rt.Helper()
	if !errors.Is(err, target) {
		m.fatalf("%s: error %v, want %v", op, err, target)
	}
}

func (m *modelRun) heartbeat(t *rapid.T) {
	id, j, tok := m.target(t)
	leaseFor := time.Duration(rapid.IntRange(1, 60).Draw(t, "lease_for_s")) * time.Second
	got, err := m.s.Heartbeat(m.ctx, store.HeartbeatParams{Now: m.now, ID: id, LeaseToken: tok, LeaseFor: leaseFor})
	op := fmt.Sprintf("Heartbeat(job %d, token %.8s)", id, tok)
	switch {
	case j == nil:
		m.wantErr(op, err, job.ErrNotFound)
	case !j.live(tok):
		m.wantErr(op, err, job.ErrLeaseLost)
	default:
		if err != nil {
			m.fatalf("%s: %v", op, err)
		}
		j.leaseExp = m.now.Add(leaseFor)
		m.compareJob(op, got, j)
		if got.LeaseExpiresAt == nil || !got.LeaseExpiresAt.Equal(j.leaseExp) {
			m.fatalf("%s: lease expires %s, want %s", op, fmtTime(got.LeaseExpiresAt), fmtTime(&j.leaseExp))
		}
	}
	m.touched = append(m.touched, id)
}

func (m *modelRun) complete(t *rapid.T) {
	id, j, tok := m.target(t)
	res, err := m.s.Complete(m.ctx, store.CompleteParams{Now: m.now, Jobs: []store.CompleteJob{{ID: id, LeaseToken: tok}}})
	op := fmt.Sprintf("Complete(job %d, token %.8s)", id, tok)
	if err != nil {
		m.fatalf("%s: %v", op, err)
	}
	if len(res) != 1 {
		m.fatalf("%s: %d results, want 1", op, len(res))
	}
	switch {
	case j == nil:
		m.wantErr(op, res[0].Err, job.ErrNotFound)
	case j.live(tok):
		if res[0].Err != nil {
			m.fatalf("%s: %v", op, res[0].Err)
		}
		j.state, j.settled = job.StateCompleted, "complete"
		m.compareJob(op, res[0].Job, j)
	case tok == j.token && j.settled == "complete":
		// The repeat of a completion whose response was lost.
		if res[0].Err != nil {
			m.fatalf("%s (repeat): %v, want the job unchanged", op, res[0].Err)
		}
		m.compareJob(op+" (repeat)", res[0].Job, j)
	default:
		m.wantErr(op, res[0].Err, job.ErrLeaseLost)
	}
	m.touched = append(m.touched, id)
}

func (m *modelRun) fail(t *rapid.T) {
	id, j, tok := m.target(t)
	retryAt := m.now.Add(time.Duration(rapid.IntRange(0, 20).Draw(t, "retry_in_s")) * time.Second)
	msg := "boom " + strconv.Itoa(rapid.IntRange(0, 9).Draw(t, "msg"))
	got, err := m.s.Fail(m.ctx, store.FailParams{Now: m.now, ID: id, LeaseToken: tok, Message: msg, RetryAt: retryAt})
	op := fmt.Sprintf("Fail(job %d, token %.8s, retry at +%s)", id, tok, retryAt.Sub(m.now))
	switch {
	case j == nil:
		m.wantErr(op, err, job.ErrNotFound)
	case j.live(tok):
		if err != nil {
			m.fatalf("%s: %v", op, err)
		}
		j.state, j.settled = job.FailedState(j.attempt, j.maxAttempts, false, retryAt, m.now), "fail"
		j.errors = append(j.errors, msg)
		switch j.state {
		case job.StateRetryable:
			j.scheduledAt = retryAt
		case job.StateAvailable:
			j.scheduledAt = m.now
		default:
		}
		m.compareJob(op, got, j)
	case tok == j.token && j.settled == "fail":
		if err != nil {
			m.fatalf("%s (repeat): %v, want the job unchanged", op, err)
		}
		m.compareJob(op+" (repeat)", got, j)
	default:
		m.wantErr(op, err, job.ErrLeaseLost)
	}
	m.touched = append(m.touched, id)
}

func (m *modelRun) advance(t *rapid.T) {
	m.now = m.now.Add(time.Duration(rapid.Int64Range(0, 40_000_000).Draw(t, "advance_us")) * time.Microsecond)
}

// toExpiry moves the clock to a running job's lease expiry, or just past
// it: the boundary of Rescue.
func (m *modelRun) toExpiry(t *rapid.T) {
	var exps []time.Time
	for _, id := range m.ids {
		if j := m.jobs[id]; j.state == job.StateRunning && j.leaseExp.After(m.now) {
			exps = append(exps, j.leaseExp)
		}
	}
	if len(exps) == 0 {
		t.Skip("no lease to expire")
	}
	m.now = rapid.SampledFrom(exps).Draw(t, "expiry").Add(time.Duration(rapid.IntRange(0, 1).Draw(t, "plus_us")) * time.Microsecond)
}

// maintain runs Promote and Rescue, as the leader does.
func (m *modelRun) maintain(_ *rapid.T) {
	wantPromoted := 0
	for _, id := range m.ids {
		j := m.jobs[id]
		if (j.state == job.StateScheduled || j.state == job.StateRetryable) && !j.scheduledAt.After(m.now) {
			j.state = job.StateAvailable
			wantPromoted++
			m.touched = append(m.touched, id)
		}
	}
	promoted, err := m.s.Promote(m.ctx, store.PromoteParams{Now: m.now, Limit: 1000})
	if err != nil {
		m.fatalf("Promote: %v", err)
	}
	if promoted[job.DefaultQueue] != wantPromoted || len(promoted) > 1 {
		m.fatalf("Promote returned %v, want %d in %s", promoted, wantPromoted, job.DefaultQueue)
	}
	var want []*mjob
	for _, id := range m.ids {
		j := m.jobs[id]
		if j.state == job.StateRunning && j.leaseExp.Before(m.now) {
			j.state, j.settled = job.RescuedState(j.attempt, j.maxAttempts), "rescue"
			j.errors = append(j.errors, store.LeaseExpiredMessage)
			if j.state == job.StateAvailable {
				j.scheduledAt = m.now
			}
			want = append(want, j)
			m.touched = append(m.touched, id)
		}
	}
	rescued, err := m.s.Rescue(m.ctx, store.RescueParams{Now: m.now, Limit: 1000})
	if err != nil {
		m.fatalf("Rescue: %v", err)
	}
	got := ids(rescued)
	slices.Sort(got)
	wantIDs := make([]job.ID, len(want))
	for i, j := range want {
		wantIDs[i] = j.id
	}
	if !sameIDs(got, wantIDs) {
		m.fatalf("Rescue at %s rescued %v, want %v (leases expired before now)", m.now.Format("15:04:05.000000"), got, wantIDs)
	}
	for _, r := range rescued {
		m.compareJob("Rescue", r, m.jobs[r.ID])
	}
}

// restart closes the store and opens it again on the same storage: every
// acknowledged change must survive.
func (m *modelRun) restart(t *rapid.T) {
	// Reopening costs as much as a dozen other actions: do it rarely.
	if rapid.IntRange(0, 3).Draw(t, "restart") != 0 {
		return
	}
	if err := m.s.Close(); err != nil {
		m.fatalf("Close: %v", err)
	}
	m.s = nil
	s, err := m.f.Open(m.ctx)
	if err != nil {
		m.fatalf("reopen: %v", err)
	}
	m.s = s
	m.touched = append(m.touched, m.ids...)
}

// check compares the store with the model: every job (List), the jobs the
// last action touched (Get) and the queue counts.
func (m *modelRun) check(_ *rapid.T) {
	res, err := m.s.List(m.ctx, store.ListParams{Limit: store.MaxListLimit})
	if err != nil {
		m.fatalf("List: %v", err)
	}
	if !sameIDs(ids(res.Jobs), m.ids) {
		m.fatalf("List returned jobs %v, want %v", ids(res.Jobs), m.ids)
	}
	for _, j := range res.Jobs {
		m.compareJob("List", j, m.jobs[j.ID])
		m.compareFull(j, m.jobs[j.ID])
	}
	slices.Sort(m.touched)
	for _, id := range slices.Compact(m.touched) {
		mj, ok := m.jobs[id]
		got, err := m.s.Get(m.ctx, id)
		if !ok {
			m.wantErr(fmt.Sprintf("Get(%d)", id), err, job.ErrNotFound)
			continue
		}
		if err != nil {
			m.fatalf("Get(%d): %v", id, err)
		}
		m.compareJob("Get", got, mj)
		m.compareFull(got, mj)
	}
	m.touched = m.touched[:0]
	want := map[job.State]int{}
	for _, j := range m.jobs {
		want[j.state]++
	}
	qs, err := m.s.Queues(m.ctx)
	if err != nil {
		m.fatalf("Queues: %v", err)
	}
	got := map[job.State]int{}
	for _, q := range qs {
		if q.Name != job.DefaultQueue {
			m.fatalf("Queues returned queue %q, want only %q", q.Name, job.DefaultQueue)
		}
		for st, n := range q.Counts {
			if n != 0 {
				got[st] = n
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		m.fatalf("Queues counts %v, want %v", got, want)
	}
}

// compareJob checks the fields every returned job holds.
func (m *modelRun) compareJob(op string, got *job.Job, want *mjob) {
	m.rt.Helper()
	if got == nil {
		m.fatalf("%s: nil job, want %s", op, want)
		return
	}
	if got.ID != want.id || got.State != want.state || got.Attempt != want.attempt {
		m.fatalf("%s: store job %d %s attempt %d, model %s", op, got.ID, got.State, got.Attempt, want)
	}
	if got.Attempt > want.maxAttempts {
		m.fatalf("%s: job %d attempt %d exceeds max_attempts %d", op, got.ID, got.Attempt, want.maxAttempts)
	}
}

// compareFull checks a job read with Get or List.
func (m *modelRun) compareFull(got *job.Job, want *mjob) {
	m.rt.Helper()
	var msgs []string
	for _, e := range got.Errors {
		msgs = append(msgs, e.Message)
	}
	if got.MaxAttempts != want.maxAttempts || got.Priority != want.priority || !got.ScheduledAt.Equal(want.scheduledAt) ||
		!slices.Equal(msgs, want.errors) {
		m.fatalf("Get: store job %d max_attempts %d prio %d sched %s errors %q, model %s errors %q", got.ID, got.MaxAttempts, got.Priority,
			got.ScheduledAt.Format("15:04:05.000000"), msgs, want, want.errors)
	}
	if got.LeaseToken != "" {
		m.fatalf("Get: job %d shows its lease token", got.ID)
	}
	if want.state == job.StateRunning && (got.LeaseExpiresAt == nil || !got.LeaseExpiresAt.Equal(want.leaseExp)) {
		m.fatalf("Get: job %d lease expires %s, want %s", got.ID, fmtTime(got.LeaseExpiresAt), fmtTime(&want.leaseExp))
	}
	if want.state.Final() != (got.FinalizedAt != nil) {
		m.fatalf("Get: job %d %s has finalized_at %s", got.ID, got.State, fmtTime(got.FinalizedAt))
	}
	for i, e := range got.Errors {
		if e.Attempt > want.attempt || (i > 0 && e.Attempt < got.Errors[i-1].Attempt) {
			m.fatalf("Get: job %d error history attempts out of order: %+v", got.ID, got.Errors)
		}
	}
}
