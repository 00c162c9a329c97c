package maintenance

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
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

var quiet = slog.New(slog.DiscardHandler)

type clock = testenv.Clock

// setup returns an engine with a settable clock over a fresh embedded
// store.
func setup(t *testing.T) (*engine.Engine, *clock) {
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
	c := testenv.NewClock()
	e, err := engine.New(engine.Config{Store: st, Now: c.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

// start starts s and stops it when the test ends.
func start(t *testing.T, s *Service) {
	t.Helper()
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
}

// waitJob polls job id until cond holds, kicking s each time, and fails
// the test after 10 seconds.
func waitJob(t *testing.T, e *engine.Engine, s *Service, id job.ID, what string, cond func(*job.Job, error) bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := e.Get(t.Context(), id)
		if cond(j, err) {
			return
		}
		select {
		case <-deadline.C:
			t.Fatalf("job %d: not %s within 10s; last seen %+v, %v", id, what, j, err)
		case <-tick.C:
			s.Kick()
		}
	}
}

func enqueue(t *testing.T, e *engine.Engine, sp job.Spec) *job.Job {
	t.Helper()
	res, err := e.Enqueue(t.Context(), sp)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return res[0].Job
}

func leaseOne(t *testing.T, e *engine.Engine, leaseFor time.Duration) *job.Job {
	t.Helper()
	jobs, err := e.Lease(t.Context(), engine.LeaseRequest{Queues: []string{job.DefaultQueue}, LeaseFor: leaseFor})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Lease = %v, %v; want one job", jobs, err)
	}
	return jobs[0]
}

func get(t *testing.T, e *engine.Engine, id job.ID) *job.Job {
	t.Helper()
	j, err := e.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%d): %v", id, err)
	}
	return j
}

func TestPromoterMakesDueJobsAvailable(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	j := enqueue(t, e, job.Spec{Kind: "k", Delay: time.Hour})
	p := NewPromoter(e, time.Hour, quiet)

	// One pass, run here so that it is over when it returns: the job is
	// not due yet.
	if n, err := p.task(t.Context()); err != nil || n != 0 {
		t.Fatalf("pass before run_at = %d, %v; want 0", n, err)
	}
	if got := get(t, e, j.ID); got.State != job.StateScheduled {
		t.Fatalf("job is %s before its run_at, want scheduled", got.State)
	}

	start(t, p)
	c.Advance(time.Hour)
	waitJob(t, e, p, j.ID, "available", func(j *job.Job, err error) bool {
		return err == nil && j.State == job.StateAvailable
	})
}

func TestLeaseRescuerRedeliversExpiredLeases(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	enqueue(t, e, job.Spec{Kind: "k"})
	leased := leaseOne(t, e, 10*time.Second)
	r := NewLeaseRescuer(e, time.Hour, quiet)

	if n, err := r.task(t.Context()); err != nil || n != 0 {
		t.Fatalf("pass with a live lease = %d, %v; want 0", n, err)
	}
	if got := get(t, e, leased.ID); got.State != job.StateRunning {
		t.Fatalf("job with a live lease is %s, want running", got.State)
	}

	start(t, r)
	c.Advance(11 * time.Second)
	waitJob(t, e, r, leased.ID, "rescued", func(j *job.Job, err error) bool {
		return err == nil && j.State == job.StateAvailable
	})
	got := get(t, e, leased.ID)
	if got.Attempt != 1 || len(got.Errors) != 1 || got.Errors[0].Message != store.LeaseExpiredMessage || got.Errors[0].Attempt != 1 {
		t.Fatalf("rescued job: attempt %d errors %+v; want attempt 1 and one lease-expired error", got.Attempt, got.Errors)
	}
	if _, err := e.Complete(t.Context(), leased.ID, leased.LeaseToken, nil); !errors.Is(err, job.ErrLeaseLost) {
		t.Fatalf("Complete with the expired token: %v, want ErrLeaseLost", err)
	}
	again := leaseOne(t, e, 10*time.Second)
	if again.ID != leased.ID || again.Attempt != 2 {
		t.Fatalf("re-delivered job %d at attempt %d, want job %d at attempt 2", again.ID, again.Attempt, leased.ID)
	}
}

func TestPrunerHonoursRetention(t *testing.T) {
	t.Parallel()
	e, c := setup(t)
	enqueue(t, e, job.Spec{Kind: "k"})
	done := leaseOne(t, e, 0)
	if _, err := e.Complete(t.Context(), done.ID, done.LeaseToken, nil); err != nil {
		t.Fatal(err)
	}
	cancelled := enqueue(t, e, job.Spec{Kind: "k", Queue: "other"})
	if _, err := e.Cancel(t.Context(), cancelled.ID); err != nil {
		t.Fatal(err)
	}
	enqueue(t, e, job.Spec{Kind: "k", MaxAttempts: 1})
	dead := leaseOne(t, e, 0)
	if _, err := e.Fail(t.Context(), engine.Failure{ID: dead.ID, LeaseToken: dead.LeaseToken, Discard: true}); err != nil {
		t.Fatal(err)
	}

	p := NewPruner(e, Retention{Completed: time.Hour, Cancelled: 24 * time.Hour, Discarded: 0}, time.Hour, quiet)
	// Passes run here, so that each is over when it returns.
	c.Advance(2 * time.Hour)
	if n, err := p.task(t.Context()); err != nil || n != 1 {
		t.Fatalf("pass after 2h = %d, %v; want 1 (the completed job)", n, err)
	}
	if _, err := e.Get(t.Context(), done.ID); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("completed job past its retention: Get err = %v, want ErrNotFound", err)
	}
	get(t, e, cancelled.ID) // within its retention
	get(t, e, dead.ID)      // zero retention keeps it

	c.Advance(24 * time.Hour)
	if n, err := p.task(t.Context()); err != nil || n != 1 {
		t.Fatalf("pass after 26h = %d, %v; want 1 (the cancelled job)", n, err)
	}
	if _, err := e.Get(t.Context(), cancelled.ID); !errors.Is(err, job.ErrNotFound) {
		t.Fatalf("cancelled job past its retention: Get err = %v, want ErrNotFound", err)
	}
	get(t, e, dead.ID)

	// The service runs the same pass on its own.
	enqueue(t, e, job.Spec{Kind: "k"})
	late := leaseOne(t, e, 0)
	if _, err := e.Complete(t.Context(), late.ID, late.LeaseToken, nil); err != nil {
		t.Fatal(err)
	}
	c.Advance(2 * time.Hour)
	start(t, p)
	waitJob(t, e, p, late.ID, "pruned", func(_ *job.Job, err error) bool {
		return errors.Is(err, job.ErrNotFound)
	})
}

func TestServiceLifecycle(t *testing.T) {
	t.Parallel()
	newCounting := func() (*Service, *atomic.Int32) {
		var runs atomic.Int32
		return newService("counting", time.Hour, quiet, func(context.Context) (int, error) {
			runs.Add(1)
			return 0, nil
		}), &runs
	}

	t.Run("stop without start", func(t *testing.T) {
		t.Parallel()
		s, runs := newCounting()
		s.Stop()
		s.Stop()
		if n := runs.Load(); n != 0 {
			t.Fatalf("task ran %d times, want 0", n)
		}
	})

	t.Run("start twice runs one loop", func(t *testing.T) {
		t.Parallel()
		s, runs := newCounting()
		for range 2 {
			if err := s.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
		}
		s.Stop()
		s.Stop()
		// One loop ran its first pass at once; the hour-long interval
		// allows no other.
		if n := runs.Load(); n != 1 {
			t.Fatalf("task ran %d times, want 1", n)
		}
	})

	t.Run("restart after stop", func(t *testing.T) {
		t.Parallel()
		s, runs := newCounting()
		for range 2 {
			if err := s.Start(t.Context()); err != nil {
				t.Fatalf("Start: %v", err)
			}
			s.Stop()
		}
		if n := runs.Load(); n != 2 {
			t.Fatalf("task ran %d times, want 2", n)
		}
	})

	t.Run("start ignores the cancellation of its ctx", func(t *testing.T) {
		t.Parallel()
		ran := make(chan struct{}, 8)
		s := newService("s", time.Hour, quiet, func(context.Context) (int, error) {
			ran <- struct{}{}
			return 0, nil
		})
		ctx, cancel := context.WithCancel(t.Context())
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.Stop()
		<-ran
		cancel()
		s.Kick()
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatal("kicked task did not run after the Start ctx was cancelled")
		}
	})

	t.Run("kick runs the task and a failing task keeps the loop", func(t *testing.T) {
		t.Parallel()
		ran := make(chan struct{}, 8)
		s := newService("s", time.Hour, quiet, func(context.Context) (int, error) {
			ran <- struct{}{}
			return 0, errors.New("store down")
		})
		s.Kick() // before Start: must not block
		start(t, s)
		for i := range 3 {
			select {
			case <-ran:
			case <-time.After(10 * time.Second):
				t.Fatalf("run %d did not happen", i+1)
			}
			s.Kick()
		}
	})

	t.Run("names and default intervals", func(t *testing.T) {
		t.Parallel()
		e, _ := setup(t)
		for _, tc := range []struct {
			s    *Service
			name string
			def  time.Duration
		}{
			{NewPromoter(e, 0, nil), "promoter", DefaultPromoteInterval},
			{NewLeaseRescuer(e, 0, nil), "lease_rescuer", DefaultRescueInterval},
			{NewPruner(e, DefaultRetention, 0, nil), "pruner", DefaultPruneInterval},
		} {
			if tc.s.Name() != tc.name || tc.s.interval != tc.def {
				t.Errorf("service %q every %s, want %q every %s", tc.s.Name(), tc.s.interval, tc.name, tc.def)
			}
		}
	})
}

func TestServiceStopWaitsForRunningTask(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	cancelled := make(chan struct{})
	release := make(chan struct{})
	var finished atomic.Bool
	var once sync.Once
	s := newService("slow", time.Hour, quiet, func(ctx context.Context) (int, error) {
		once.Do(func() { close(started) })
		<-ctx.Done()
		close(cancelled)
		<-release
		finished.Store(true)
		return 0, ctx.Err()
	})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-started
	stopped := make(chan struct{})
	go func() {
		s.Stop()
		close(stopped)
	}()
	<-cancelled // Stop cancelled the task's ctx
	select {
	case <-stopped:
		t.Fatal("Stop returned while the task was still running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after the task did")
	}
	if !finished.Load() {
		t.Fatal("Stop returned before the task finished")
	}
}

func TestServiceGate(t *testing.T) {
	t.Parallel()
	var runs atomic.Int32
	ran := make(chan struct{}, 16)
	s := newService("gated", time.Hour, quiet, func(context.Context) (int, error) {
		runs.Add(1)
		ran <- struct{}{}
		return 0, nil
	})
	var leader atomic.Bool
	s.SetGate(leader.Load)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer s.Stop()
	// While the gate is shut, neither the first pass nor kicks run the task.
	for range 3 {
		s.Kick()
	}
	s.Stop()
	if n := runs.Load(); n != 0 {
		t.Fatalf("task ran %d times behind a shut gate, want 0", n)
	}
	leader.Store(true)
	if err := s.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("task did not run once the gate opened")
	}
	s.SetGate(nil)
	s.Kick()
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("task did not run after the gate was removed")
	}
}
