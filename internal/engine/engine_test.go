package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock() }

type leaseSpy = testenv.LeaseSpy

// bundle is one test's engine over a fresh embedded store.
type bundle struct {
	eng   *engine.Engine
	clock *clock
	spy   *leaseSpy
}

// setup opens a fresh embedded store and an engine over it. cfg.Store and
// cfg.Now are filled in unless cfg.Now is set.
func setup(t *testing.T, cfg engine.Config) *bundle {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	b := &bundle{clock: newClock(), spy: testenv.NewLeaseSpy(st, 64)}
	cfg.Store = b.spy
	if cfg.Now == nil {
		cfg.Now = b.clock.Now
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	b.eng, err = engine.New(cfg)
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	return b
}

// waitEmptyLease waits until a Lease call found nothing (see leaseSpy).
func (b *bundle) waitEmptyLease(t *testing.T) {
	t.Helper()
	select {
	case <-b.spy.Empty:
	case <-time.After(10 * time.Second):
		t.Fatal("no lease attempt seen within 10s")
	}
}

func (b *bundle) enqueue(t *testing.T, specs ...job.Spec) []*job.Job {
	t.Helper()
	res, err := b.eng.Enqueue(t.Context(), specs...)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	out := make([]*job.Job, len(res))
	for i, r := range res {
		out[i] = r.Job
	}
	return out
}

func (b *bundle) lease(t *testing.T, r engine.LeaseRequest) []*job.Job {
	t.Helper()
	jobs, err := b.eng.Lease(t.Context(), r)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	return jobs
}

func (b *bundle) get(t *testing.T, id job.ID) *job.Job {
	t.Helper()
	j, err := b.eng.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return j
}

func (b *bundle) count(t *testing.T, states ...job.State) int {
	t.Helper()
	res, err := b.eng.List(t.Context(), store.ListParams{States: states, Limit: store.MaxListLimit})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return len(res.Jobs)
}

func specs(n int, sp job.Spec) []job.Spec {
	out := make([]job.Spec, n)
	for i := range out {
		out[i] = sp
	}
	return out
}

// wantValidation checks that err is a *job.ValidationError on field.
func wantValidation(t *testing.T, err error, field string) {
	t.Helper()
	var ve *job.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v (%T), want *job.ValidationError on %q", err, err, field)
	}
	if ve.Field != field {
		t.Fatalf("ValidationError.Field = %q, want %q (err: %v)", ve.Field, field, err)
	}
	if !errors.Is(err, job.ErrInvalid) {
		t.Fatalf("errors.Is(%v, job.ErrInvalid) = false", err)
	}
}

// leaseResult is the outcome of a Lease run in another goroutine.
type leaseResult struct {
	jobs []*job.Job
	err  error
}

func leaseAsync(ctx context.Context, e *engine.Engine, r engine.LeaseRequest) <-chan leaseResult {
	ch := make(chan leaseResult, 1)
	go func() {
		jobs, err := e.Lease(ctx, r)
		ch <- leaseResult{jobs, err}
	}()
	return ch
}

func recvLease(t *testing.T, ch <-chan leaseResult, within time.Duration) leaseResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(within):
		t.Fatalf("Lease did not return within %s", within)
		return leaseResult{}
	}
}

func TestEnqueue(t *testing.T) {
	t.Parallel()
	valid := job.Spec{Kind: "email", Args: json.RawMessage(`{"to":"a@example.com"}`)}

	t.Run("one invalid spec has an unprefixed field", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		_, err := b.eng.Enqueue(t.Context(), job.Spec{Kind: "bad kind"})
		wantValidation(t, err, "kind")
	})

	t.Run("batch errors name the job", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		bad := valid
		bad.Priority = 42
		_, err := b.eng.Enqueue(t.Context(), valid, valid, bad)
		wantValidation(t, err, "jobs[2].priority")
		if n := b.count(t); n != 0 {
			t.Fatalf("%d jobs stored after a rejected batch, want 0", n)
		}
	})

	t.Run("a batch with a missing dependency inserts nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		dep := valid
		dep.DependsOn = []job.ID{999999}
		_, err := b.eng.Enqueue(t.Context(), valid, dep)
		wantValidation(t, err, "jobs[1].depends_on[0]")
		if n := b.count(t); n != 0 {
			t.Fatalf("%d jobs stored after a rejected batch, want 0", n)
		}
	})

	t.Run("empty batch", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		_, err := b.eng.Enqueue(t.Context())
		wantValidation(t, err, "jobs")
	})

	t.Run("batch over MaxInsertBatch is too large", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		_, err := b.eng.Enqueue(t.Context(), specs(engine.MaxInsertBatch+1, valid)...)
		wantValidation(t, err, "jobs")
		if !errors.Is(err, job.ErrTooLarge) {
			t.Fatalf("errors.Is(%v, ErrTooLarge) = false", err)
		}
		if n := b.count(t); n != 0 {
			t.Fatalf("%d jobs stored, want 0", n)
		}
	})

	t.Run("args over the limit are too large", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{Limits: job.Limits{MaxArgsBytes: 32}})
		big := valid
		big.Args = json.RawMessage(`"` + strings.Repeat("x", 64) + `"`)
		_, err := b.eng.Enqueue(t.Context(), big)
		wantValidation(t, err, "args")
		if !errors.Is(err, job.ErrTooLarge) {
			t.Fatalf("errors.Is(%v, ErrTooLarge) = false", err)
		}
	})

	t.Run("unique duplicate returns the existing job", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		u := valid
		u.Unique = &job.UniqueOpts{Key: "k1"}
		first, err := b.eng.Enqueue(t.Context(), u)
		if err != nil {
			t.Fatal(err)
		}
		second, err := b.eng.Enqueue(t.Context(), u)
		if err != nil {
			t.Fatal(err)
		}
		if first[0].Duplicate || !second[0].Duplicate {
			t.Fatalf("Duplicate = %v, %v; want false, true", first[0].Duplicate, second[0].Duplicate)
		}
		if first[0].Job.ID != second[0].Job.ID {
			t.Fatalf("duplicate returned job %d, want %d", second[0].Job.ID, first[0].Job.ID)
		}
		if n := b.count(t); n != 1 {
			t.Fatalf("%d jobs stored, want 1", n)
		}
	})

	t.Run("defaults and the clock", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		j := b.enqueue(t, valid, job.Spec{Kind: "later", Delay: time.Hour})
		now := b.clock.Now()
		if j[0].State != job.StateAvailable || j[0].Queue != job.DefaultQueue || j[0].Priority != job.DefaultPriority || j[0].MaxAttempts != job.DefaultMaxAttempts {
			t.Fatalf("job = %+v, want available in the default queue with default priority and attempts", j[0])
		}
		if j[1].State != job.StateScheduled || !j[1].ScheduledAt.Equal(now.Add(time.Hour)) {
			t.Fatalf("delayed job: state %s at %s, want scheduled at %s", j[1].State, j[1].ScheduledAt, now.Add(time.Hour))
		}
	})
}

func TestLeaseValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	for _, tc := range []struct {
		name  string
		req   engine.LeaseRequest
		field string
	}{
		{"no queues", engine.LeaseRequest{}, "queues"},
		{"bad queue name", engine.LeaseRequest{Queues: []string{"ok", "bad queue"}}, "queues[1]"},
		{"empty queue name", engine.LeaseRequest{Queues: []string{""}}, "queues[0]"},
		{"negative max", engine.LeaseRequest{Queues: []string{"q"}, Max: -1}, "max"},
		{"max over MaxLeaseBatch", engine.LeaseRequest{Queues: []string{"q"}, Max: engine.MaxLeaseBatch + 1}, "max"},
		{"lease_for under the minimum", engine.LeaseRequest{Queues: []string{"q"}, LeaseFor: engine.MinLeaseFor - time.Millisecond}, "lease_for"},
		{"lease_for negative", engine.LeaseRequest{Queues: []string{"q"}, LeaseFor: -time.Second}, "lease_for"},
		{"lease_for over the maximum", engine.LeaseRequest{Queues: []string{"q"}, LeaseFor: engine.MaxLeaseFor + time.Second}, "lease_for"},
		{"negative wait", engine.LeaseRequest{Queues: []string{"q"}, Wait: -time.Second}, "wait"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			jobs, err := b.eng.Lease(t.Context(), tc.req)
			wantValidation(t, err, tc.field)
			if jobs != nil {
				t.Fatalf("jobs = %v with an error, want nil", jobs)
			}
		})
	}
}

func TestLease(t *testing.T) {
	t.Parallel()

	t.Run("zero max leases one", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		b.enqueue(t, specs(3, job.Spec{Kind: "k"})...)
		jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})
		if len(jobs) != 1 {
			t.Fatalf("leased %d jobs, want 1", len(jobs))
		}
	})

	t.Run("MaxLeaseBatch is allowed", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		b.enqueue(t, specs(3, job.Spec{Kind: "k"})...)
		jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Max: engine.MaxLeaseBatch})
		if len(jobs) != 3 {
			t.Fatalf("leased %d jobs, want 3", len(jobs))
		}
	})

	t.Run("lease fields come from the request and the clock", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{DefaultLeaseFor: 42 * time.Second})
		b.enqueue(t, job.Spec{Kind: "k"})
		jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Worker: "w-1"})
		if len(jobs) != 1 {
			t.Fatalf("leased %d jobs, want 1", len(jobs))
		}
		j, now := jobs[0], b.clock.Now()
		if j.State != job.StateRunning || j.Attempt != 1 || j.LeaseToken == "" || j.AttemptedBy != "w-1" {
			t.Fatalf("leased job = %+v, want running, attempt 1, a token, attempted by w-1", j)
		}
		if want := now.Add(42 * time.Second); j.LeaseExpiresAt == nil || !j.LeaseExpiresAt.Equal(want) {
			t.Fatalf("LeaseExpiresAt = %v, want %s (Config.DefaultLeaseFor)", j.LeaseExpiresAt, want)
		}
	})

	t.Run("no wait and nothing available returns at once", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		jobs := b.lease(t, engine.LeaseRequest{Queues: []string{"empty"}})
		if len(jobs) != 0 {
			t.Fatalf("leased %d jobs from an empty queue", len(jobs))
		}
	})
}

// TestLeaseLongPollWakesOnEnqueue proves the notifier: the poll interval
// is an hour, so only Enqueue's wake-up can end the wait in time.
func TestLeaseLongPollWakesOnEnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{PollInterval: time.Hour})
	ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{"mail"}, Wait: 30 * time.Second})
	b.waitEmptyLease(t)
	want := b.enqueue(t, job.Spec{Kind: "k", Queue: "mail"})[0]
	r := recvLease(t, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("Lease: %v", r.err)
	}
	if len(r.jobs) != 1 || r.jobs[0].ID != want.ID || r.jobs[0].State != job.StateRunning {
		t.Fatalf("Lease returned %v, want job %d running", r.jobs, want.ID)
	}
}

// TestLeaseWaitHandOff proves the hand-off of the embedded store: a lease
// call that parked gets the job enqueued after it from the insert's own
// commit, so insert and lease cost one commit, not two.
func TestLeaseWaitHandOff(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{PollInterval: time.Hour})
	st := b.spy.Store.(*sqlitestore.Store)
	ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{"mail"}, Wait: 30 * time.Second})
	select {
	case <-b.spy.Parked:
	case <-time.After(10 * time.Second):
		t.Fatal("the lease call did not park within 10s")
	}
	before := st.Stats().Commits
	want := b.enqueue(t, job.Spec{Kind: "k", Queue: "mail"})[0]
	r := recvLease(t, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("Lease: %v", r.err)
	}
	if len(r.jobs) != 1 || r.jobs[0].ID != want.ID || r.jobs[0].State != job.StateRunning || r.jobs[0].LeaseToken == "" {
		t.Fatalf("Lease returned %v, want job %d running with a token", r.jobs, want.ID)
	}
	if n := st.Stats().Commits - before; n != 1 {
		t.Fatalf("enqueue and lease took %d commits, want 1", n)
	}
	got, err := b.eng.Get(t.Context(), want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != job.StateRunning || got.Attempt != 1 {
		t.Fatalf("stored job is %s attempt %d, want running attempt 1", got.State, got.Attempt)
	}
	// The handed token is the live one: it completes the job.
	if _, err := b.eng.Complete(t.Context(), want.ID, r.jobs[0].LeaseToken, nil); err != nil {
		t.Fatalf("complete with the handed token: %v", err)
	}
}

func TestLeaseWaitEndsEmpty(t *testing.T) {
	t.Parallel()

	t.Run("after Wait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		start := time.Now()
		jobs, err := b.eng.Lease(t.Context(), engine.LeaseRequest{Queues: []string{"q"}, Wait: 50 * time.Millisecond})
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		if jobs == nil || len(jobs) != 0 {
			t.Fatalf("Lease = %#v, want an empty, non-nil slice", jobs)
		}
		if d := time.Since(start); d < 50*time.Millisecond {
			t.Fatalf("Lease returned after %s, before its 50ms wait", d)
		}
	})

	t.Run("capped by MaxWait", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{MaxWait: 50 * time.Millisecond, PollInterval: time.Hour})
		ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{"q"}, Wait: time.Hour})
		r := recvLease(t, ch, 10*time.Second)
		if r.err != nil || r.jobs == nil || len(r.jobs) != 0 {
			t.Fatalf("Lease = %#v, %v; want an empty slice", r.jobs, r.err)
		}
	})
}

func TestLeaseContextCancelEndsWait(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{PollInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	ch := leaseAsync(ctx, b.eng, engine.LeaseRequest{Queues: []string{"q"}, Wait: 30 * time.Second})
	b.waitEmptyLease(t)
	cancel()
	r := recvLease(t, ch, 10*time.Second)
	if !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Lease err = %v, want context.Canceled", r.err)
	}
	if len(r.jobs) != 0 {
		t.Fatalf("Lease returned jobs %v with its error", r.jobs)
	}
}

func TestResumeQueueWakesWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{PollInterval: time.Hour})
	if err := b.eng.PauseQueue(t.Context(), "q"); err != nil {
		t.Fatal(err)
	}
	want := b.enqueue(t, job.Spec{Kind: "k", Queue: "q"})[0]
	if jobs := b.lease(t, engine.LeaseRequest{Queues: []string{"q"}}); len(jobs) != 0 {
		t.Fatalf("leased %d jobs from a paused queue", len(jobs))
	}
	<-b.spy.Empty // the lease above
	ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{"q"}, Wait: 30 * time.Second})
	b.waitEmptyLease(t)
	if err := b.eng.ResumeQueue(t.Context(), "q"); err != nil {
		t.Fatal(err)
	}
	r := recvLease(t, ch, 10*time.Second)
	if r.err != nil || len(r.jobs) != 1 || r.jobs[0].ID != want.ID {
		t.Fatalf("Lease = %v, %v; want job %d", r.jobs, r.err, want.ID)
	}
}

func TestFail(t *testing.T) {
	t.Parallel()
	leaseOne := func(t *testing.T, b *bundle, sp job.Spec) *job.Job {
		t.Helper()
		b.enqueue(t, sp)
		jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})
		if len(jobs) != 1 {
			t.Fatalf("leased %d jobs, want 1", len(jobs))
		}
		return jobs[0]
	}
	dur := func(d time.Duration) *time.Duration { return &d }

	t.Run("retry_in zero makes the job available and wakes a waiter", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{PollInterval: time.Hour})
		j := leaseOne(t, b, job.Spec{Kind: "k"})
		ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Wait: 30 * time.Second})
		b.waitEmptyLease(t)
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, Message: "flaky", RetryIn: dur(0)})
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if f.State != job.StateAvailable {
			t.Fatalf("state after Fail with retry_in 0 = %s, want available", f.State)
		}
		r := recvLease(t, ch, 10*time.Second)
		if r.err != nil || len(r.jobs) != 1 || r.jobs[0].ID != j.ID || r.jobs[0].Attempt != 2 {
			t.Fatalf("waiting Lease = %v, %v; want job %d at attempt 2", r.jobs, r.err, j.ID)
		}
	})

	t.Run("config backoff decides without retry_in", func(t *testing.T) {
		t.Parallel()
		var seen job.Job
		b := setup(t, engine.Config{Backoff: func(j *job.Job) time.Duration {
			seen = *j
			if j.Kind == "slow" {
				return time.Hour
			}
			return time.Minute
		}})
		j := leaseOne(t, b, job.Spec{Kind: "slow"})
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, Message: "boom", Detail: "stack"})
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if want := b.clock.Now().Add(time.Hour); f.State != job.StateRetryable || !f.ScheduledAt.Equal(want) {
			t.Fatalf("after Fail: %s at %s, want retryable at %s", f.State, f.ScheduledAt, want)
		}
		if seen.ID != j.ID || seen.Attempt != 1 {
			t.Fatalf("Backoff saw job %d attempt %d, want job %d attempt 1", seen.ID, seen.Attempt, j.ID)
		}
		got := b.get(t, j.ID)
		if len(got.Errors) != 1 || got.Errors[0].Message != "boom" || got.Errors[0].Detail != "stack" || got.Errors[0].Attempt != 1 {
			t.Fatalf("Errors = %+v, want one entry for attempt 1: boom / stack", got.Errors)
		}
	})

	t.Run("failure backoff wins over config", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{Backoff: func(*job.Job) time.Duration { return time.Hour }})
		j := leaseOne(t, b, job.Spec{Kind: "k"})
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken,
			Backoff: func(*job.Job) time.Duration { return 2 * time.Minute }})
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if want := b.clock.Now().Add(2 * time.Minute); !f.ScheduledAt.Equal(want) {
			t.Fatalf("ScheduledAt = %s, want %s", f.ScheduledAt, want)
		}
	})

	t.Run("retry_in wins over backoff", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{Backoff: func(*job.Job) time.Duration { return time.Hour }})
		j := leaseOne(t, b, job.Spec{Kind: "k"})
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, RetryIn: dur(5 * time.Second)})
		if err != nil {
			t.Fatalf("Fail: %v", err)
		}
		if want := b.clock.Now().Add(5 * time.Second); f.State != job.StateRetryable || !f.ScheduledAt.Equal(want) {
			t.Fatalf("after Fail: %s at %s, want retryable at %s", f.State, f.ScheduledAt, want)
		}
	})

	t.Run("the last attempt discards", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		j := leaseOne(t, b, job.Spec{Kind: "k", MaxAttempts: 1})
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, RetryIn: dur(0)})
		if err != nil || f.State != job.StateDiscarded {
			t.Fatalf("Fail = %v, %v; want discarded", f, err)
		}
	})

	t.Run("discard and cancel", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		j := leaseOne(t, b, job.Spec{Kind: "k"})
		f, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, Discard: true})
		if err != nil || f.State != job.StateDiscarded {
			t.Fatalf("Fail(Discard) = %v, %v; want discarded", f, err)
		}
		j = leaseOne(t, b, job.Spec{Kind: "k"})
		f, err = b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, Cancel: true})
		if err != nil || f.State != job.StateCancelled {
			t.Fatalf("Fail(Cancel) = %v, %v; want cancelled", f, err)
		}
	})

	t.Run("invalid failures change nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		j := leaseOne(t, b, job.Spec{Kind: "k"})
		_, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, RetryIn: dur(-time.Second)})
		wantValidation(t, err, "retry_in")
		_, err = b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: j.LeaseToken, Discard: true, Cancel: true})
		wantValidation(t, err, "discard")
		_, err = b.eng.Fail(t.Context(), engine.Failure{ID: j.ID})
		wantValidation(t, err, "lease_token")
		if got := b.get(t, j.ID); got.State != job.StateRunning || len(got.Errors) != 0 {
			t.Fatalf("job after rejected fails: %s with %d errors, want running with none", got.State, len(got.Errors))
		}
	})
}

func TestCompleteMany(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	b.enqueue(t, specs(5, job.Spec{Kind: "k"})...)
	jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Max: 5, LeaseFor: time.Minute})
	if len(jobs) != 5 {
		t.Fatalf("leased %d jobs, want 5", len(jobs))
	}
	// Make the fourth job's token stale: its lease expires and is rescued.
	// The others are extended first so that only it expires.
	for _, j := range []*job.Job{jobs[0], jobs[1], jobs[2], jobs[4]} {
		if _, err := b.eng.Heartbeat(t.Context(), j.ID, j.LeaseToken, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	b.clock.Advance(2 * time.Minute)
	if n, err := b.eng.Rescue(t.Context(), 10); err != nil || n != 1 {
		t.Fatalf("Rescue = %d, %v; want 1", n, err)
	}

	res, err := b.eng.CompleteMany(t.Context(), []engine.Completion{
		{ID: jobs[0].ID, LeaseToken: jobs[0].LeaseToken},
		{ID: jobs[1].ID, LeaseToken: ""},
		{ID: jobs[2].ID, LeaseToken: jobs[2].LeaseToken, Output: json.RawMessage(`{"broken":`)},
		{ID: jobs[3].ID, LeaseToken: jobs[3].LeaseToken},
		{ID: jobs[4].ID, LeaseToken: jobs[4].LeaseToken, Output: json.RawMessage(` {"n": 1} `)},
	})
	if err != nil {
		t.Fatalf("CompleteMany: %v", err)
	}
	if len(res) != 5 {
		t.Fatalf("CompleteMany returned %d results, want 5", len(res))
	}
	if res[0].Err != nil || res[0].Job.State != job.StateCompleted {
		t.Errorf("good token: %v, %v; want completed", res[0].Job, res[0].Err)
	}
	wantValidation(t, res[1].Err, "lease_token")
	wantValidation(t, res[2].Err, "output")
	if !errors.Is(res[3].Err, job.ErrLeaseLost) {
		t.Errorf("stale token: err = %v, want ErrLeaseLost", res[3].Err)
	}
	if res[4].Err != nil || res[4].Job.State != job.StateCompleted {
		t.Errorf("good token with output: %v, %v; want completed", res[4].Job, res[4].Err)
	}

	for i, want := range []job.State{job.StateCompleted, job.StateRunning, job.StateRunning, job.StateAvailable, job.StateCompleted} {
		if got := b.get(t, jobs[i].ID).State; got != want {
			t.Errorf("job %d (completion %d) is %s, want %s", jobs[i].ID, i, got, want)
		}
	}
	if out := b.get(t, jobs[4].ID).Output; string(out) != `{"n":1}` {
		t.Errorf("stored output = %s, want the compacted {\"n\":1}", out)
	}
}

func TestComplete(t *testing.T) {
	t.Parallel()

	t.Run("output over the args limit is too large", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{Limits: job.Limits{MaxArgsBytes: 64}})
		b.enqueue(t, job.Spec{Kind: "k"})
		j := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})[0]
		_, err := b.eng.Complete(t.Context(), j.ID, j.LeaseToken, json.RawMessage(`"`+strings.Repeat("x", 100)+`"`))
		if !errors.Is(err, job.ErrTooLarge) {
			t.Fatalf("Complete err = %v, want ErrTooLarge", err)
		}
		if got := b.get(t, j.ID).State; got != job.StateRunning {
			t.Fatalf("job is %s after a refused completion, want running", got)
		}
		// Output within the limit is fine.
		if _, err := b.eng.Complete(t.Context(), j.ID, j.LeaseToken, json.RawMessage(`"small"`)); err != nil {
			t.Fatalf("Complete: %v", err)
		}
	})

	t.Run("repeating a completion returns the job", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		b.enqueue(t, job.Spec{Kind: "k"})
		j := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})[0]
		for i := range 2 {
			got, err := b.eng.Complete(t.Context(), j.ID, j.LeaseToken, nil)
			if err != nil || got.State != job.StateCompleted {
				t.Fatalf("Complete #%d = %v, %v; want completed", i+1, got, err)
			}
		}
		if _, err := b.eng.Complete(t.Context(), j.ID, "another-token", nil); !errors.Is(err, job.ErrLeaseLost) {
			t.Fatalf("Complete with a wrong token: %v, want ErrLeaseLost", err)
		}
	})
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{DefaultLeaseFor: 40 * time.Second})
	b.enqueue(t, job.Spec{Kind: "k"})
	j := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, LeaseFor: 10 * time.Second})[0]

	b.clock.Advance(5 * time.Second)
	h, err := b.eng.Heartbeat(t.Context(), j.ID, j.LeaseToken, 20*time.Second)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if want := b.clock.Now().Add(20 * time.Second); h.LeaseExpiresAt == nil || !h.LeaseExpiresAt.Equal(want) {
		t.Fatalf("LeaseExpiresAt = %v, want %s", h.LeaseExpiresAt, want)
	}
	// Past the first lease's end, the job is still held: nothing to rescue.
	b.clock.Advance(10 * time.Second)
	if n, err := b.eng.Rescue(t.Context(), 10); err != nil || n != 0 {
		t.Fatalf("Rescue after a heartbeat = %d, %v; want 0", n, err)
	}
	h, err = b.eng.Heartbeat(t.Context(), j.ID, j.LeaseToken, 0)
	if err != nil {
		t.Fatalf("Heartbeat: %v", err)
	}
	if want := b.clock.Now().Add(40 * time.Second); !h.LeaseExpiresAt.Equal(want) {
		t.Fatalf("LeaseExpiresAt with lease_for 0 = %v, want %s (the default)", h.LeaseExpiresAt, want)
	}

	_, err = b.eng.Heartbeat(t.Context(), j.ID, j.LeaseToken, time.Millisecond)
	wantValidation(t, err, "lease_for")
	_, err = b.eng.Heartbeat(t.Context(), j.ID, "", time.Minute)
	wantValidation(t, err, "lease_token")
	if _, err := b.eng.Heartbeat(t.Context(), j.ID, "stale", time.Minute); !errors.Is(err, job.ErrLeaseLost) {
		t.Fatalf("Heartbeat with a wrong token: %v, want ErrLeaseLost", err)
	}
	if _, err := b.eng.Heartbeat(t.Context(), 424242, j.LeaseToken, time.Minute); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("Heartbeat of a missing job: %v, want ErrNotFound", err)
	}
}

func TestSnooze(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	b.enqueue(t, job.Spec{Kind: "k"})
	j := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})[0]

	_, err := b.eng.Snooze(t.Context(), j.ID, j.LeaseToken, -time.Second)
	wantValidation(t, err, "delay")
	if got := b.get(t, j.ID); got.State != job.StateRunning || got.Attempt != 1 {
		t.Fatalf("after a rejected snooze: %s attempt %d, want running attempt 1", got.State, got.Attempt)
	}

	s, err := b.eng.Snooze(t.Context(), j.ID, j.LeaseToken, time.Hour)
	if err != nil {
		t.Fatalf("Snooze: %v", err)
	}
	if want := b.clock.Now().Add(time.Hour); s.State != job.StateScheduled || s.Attempt != 0 || !s.ScheduledAt.Equal(want) {
		t.Fatalf("after Snooze: %s attempt %d at %s; want scheduled attempt 0 at %s", s.State, s.Attempt, s.ScheduledAt, want)
	}

	b.enqueue(t, job.Spec{Kind: "k"})
	j = b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})[0]
	s, err = b.eng.Snooze(t.Context(), j.ID, j.LeaseToken, 0)
	if err != nil || s.State != job.StateAvailable || s.Attempt != 0 {
		t.Fatalf("Snooze(0) = %v, %v; want available at attempt 0", s, err)
	}
}

func TestList(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})

	t.Run("validation", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			name  string
			p     store.ListParams
			field string
		}{
			{"unknown state", store.ListParams{States: []job.State{job.StateAvailable, "sleeping"}}, "state"},
			{"negative limit", store.ListParams{Limit: -1}, "limit"},
			{"limit over the maximum", store.ListParams{Limit: store.MaxListLimit + 1}, "limit"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				_, err := b.eng.List(t.Context(), tc.p)
				wantValidation(t, err, tc.field)
			})
		}
	})

	t.Run("default limit is 100", func(t *testing.T) {
		t.Parallel()
		b := setup(t, engine.Config{})
		b.enqueue(t, specs(101, job.Spec{Kind: "k"})...)
		res, err := b.eng.List(t.Context(), store.ListParams{})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(res.Jobs) != 100 || res.Next == 0 {
			t.Fatalf("List without a limit: %d jobs, next %d; want 100 and a cursor", len(res.Jobs), res.Next)
		}
		rest, err := b.eng.List(t.Context(), store.ListParams{After: res.Next})
		if err != nil || len(rest.Jobs) != 1 || rest.Next != 0 {
			t.Fatalf("second page = %v, %v; want the last job and no cursor", rest, err)
		}
	})
}

func TestPromoteInBatches(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{10, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			b := setup(t, engine.Config{})
			b.enqueue(t, specs(25, job.Spec{Kind: "k", Delay: time.Hour})...)
			if n, err := b.eng.Promote(t.Context(), 10); err != nil || n != 0 {
				t.Fatalf("Promote before due = %d, %v; want 0", n, err)
			}
			b.clock.Advance(time.Hour)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			n, err := b.eng.Promote(ctx, limit)
			if err != nil || n != 25 {
				t.Fatalf("Promote(%d) = %d, %v; want 25", limit, n, err)
			}
			if got := b.count(t, job.StateAvailable); got != 25 {
				t.Fatalf("%d jobs available, want 25", got)
			}
		})
	}
}

func TestPromoteWakesWaiters(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{PollInterval: time.Hour})
	want := b.enqueue(t, job.Spec{Kind: "k", Queue: "later", Delay: time.Minute})[0]
	ch := leaseAsync(t.Context(), b.eng, engine.LeaseRequest{Queues: []string{"later"}, Wait: 30 * time.Second})
	b.waitEmptyLease(t)
	b.clock.Advance(time.Minute)
	if n, err := b.eng.Promote(t.Context(), 10); err != nil || n != 1 {
		t.Fatalf("Promote = %d, %v; want 1", n, err)
	}
	r := recvLease(t, ch, 10*time.Second)
	if r.err != nil || len(r.jobs) != 1 || r.jobs[0].ID != want.ID {
		t.Fatalf("waiting Lease = %v, %v; want job %d", r.jobs, r.err, want.ID)
	}
}

func TestRescueInBatches(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{10, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			b := setup(t, engine.Config{})
			b.enqueue(t, specs(25, job.Spec{Kind: "k"})...)
			jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Max: 25, LeaseFor: time.Second})
			if len(jobs) != 25 {
				t.Fatalf("leased %d jobs, want 25", len(jobs))
			}
			if n, err := b.eng.Rescue(t.Context(), 10); err != nil || n != 0 {
				t.Fatalf("Rescue of live leases = %d, %v; want 0", n, err)
			}
			b.clock.Advance(2 * time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			n, err := b.eng.Rescue(ctx, limit)
			if err != nil || n != 25 {
				t.Fatalf("Rescue(%d) = %d, %v; want 25", limit, n, err)
			}
			for _, j := range jobs {
				got := b.get(t, j.ID)
				if got.State != job.StateAvailable || got.Attempt != 1 || len(got.Errors) != 1 || got.Errors[0].Message != store.LeaseExpiredMessage {
					t.Fatalf("rescued job = %s attempt %d errors %+v; want available, attempt 1, one lease-expired error", got.State, got.Attempt, got.Errors)
				}
			}
			if _, err := b.eng.Complete(t.Context(), jobs[0].ID, jobs[0].LeaseToken, nil); !errors.Is(err, job.ErrLeaseLost) {
				t.Fatalf("Complete with a rescued token: %v, want ErrLeaseLost", err)
			}
		})
	}
}

func TestPruneInBatches(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{10, 0} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			t.Parallel()
			b := setup(t, engine.Config{})
			b.enqueue(t, specs(25, job.Spec{Kind: "k"})...)
			jobs := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Max: 25})
			cs := make([]engine.Completion, len(jobs))
			for i, j := range jobs {
				cs[i] = engine.Completion{ID: j.ID, LeaseToken: j.LeaseToken}
			}
			if _, err := b.eng.CompleteMany(t.Context(), cs); err != nil {
				t.Fatal(err)
			}
			b.clock.Advance(2 * time.Hour)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			n, err := b.eng.Prune(ctx, b.clock.Now().Add(-time.Hour), []job.State{job.StateCompleted}, limit)
			if err != nil || n != 25 {
				t.Fatalf("Prune(%d) = %d, %v; want 25", limit, n, err)
			}
			if got := b.count(t); got != 0 {
				t.Fatalf("%d jobs left, want 0", got)
			}
		})
	}
}

func TestPruneHonoursStatesAndRetention(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	complete := func() job.ID {
		t.Helper()
		b.enqueue(t, job.Spec{Kind: "k"})
		j := b.lease(t, engine.LeaseRequest{Queues: []string{job.DefaultQueue}})[0]
		if _, err := b.eng.Complete(t.Context(), j.ID, j.LeaseToken, nil); err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	oldCompleted := complete()
	oldCancelled := b.enqueue(t, job.Spec{Kind: "k", Queue: "other"})[0].ID
	if _, err := b.eng.Cancel(t.Context(), oldCancelled); err != nil {
		t.Fatal(err)
	}
	oldScheduled := b.enqueue(t, job.Spec{Kind: "k", Queue: "other", Delay: 100 * time.Hour})[0].ID
	b.clock.Advance(2 * time.Hour)
	newCompleted := complete()

	// Completed and scheduled are asked for; scheduled is not final and
	// is ignored.
	n, err := b.eng.Prune(t.Context(), b.clock.Now().Add(-time.Hour), []job.State{job.StateCompleted, job.StateScheduled}, 100)
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	if _, err := b.eng.Get(t.Context(), oldCompleted); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("old completed job: Get err = %v, want ErrNotFound", err)
	}
	for _, id := range []job.ID{oldCancelled, oldScheduled, newCompleted} {
		b.get(t, id) // still there
	}

	// All final states when none are named.
	n, err = b.eng.Prune(t.Context(), b.clock.Now().Add(-time.Hour), nil, 100)
	if err != nil || n != 1 {
		t.Fatalf("Prune of every final state = %d, %v; want 1 (the old cancelled job)", n, err)
	}
	if _, err := b.eng.Get(t.Context(), oldCancelled); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("old cancelled job: Get err = %v, want ErrNotFound", err)
	}
	b.get(t, newCompleted)
}
