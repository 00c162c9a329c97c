package drover_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover"
)

// workers returns a registry with f as the worker of testArgs.
func workers(f func(ctx context.Context, j *drover.Job[testArgs]) error, opts drover.WorkerOpts) *drover.Workers {
	ws := drover.NewWorkers()
	drover.AddWorkerWithOpts(ws, drover.WorkFunc(f), opts)
	return ws
}

func TestWorkerGetsTypedArgs(t *testing.T) {
	t.Parallel()
	onEachStore(t, testWorkerGetsTypedArgs)
}

func testWorkerGetsTypedArgs(t *testing.T, ls libStore) {
	type seen struct {
		args    testArgs
		row     drover.JobRow
		ctxRow  *drover.JobRow
		fromCtx bool
	}
	ch := make(chan seen, 1)
	c := ls.startClient(t, workers(func(ctx context.Context, j *drover.Job[testArgs]) error {
		row, ok := drover.JobFromContext(ctx)
		ch <- seen{args: j.Args, row: *j.JobRow, ctxRow: row, fromCtx: ok}
		return nil
	}, drover.WorkerOpts{}), drover.Config{})

	want := testArgs{
		Name:  "héllo, \"world\"",
		Inner: innerArgs{N: 7, Tags: map[string]string{"a": "b", "c": ""}},
		List:  []int{3, 1, 2},
		Ptr:   &innerArgs{N: -9},
	}
	id := insert(t, c, want, nil).ID
	got := recv(t, ch, 10*time.Second, "worker call")
	if !reflect.DeepEqual(got.args, want) {
		t.Errorf("worker args = %+v, want %+v", got.args, want)
	}
	if got.row.ID != id || got.row.Kind != "test.work" || got.row.Attempt != 1 || got.row.State != drover.JobStateRunning {
		t.Errorf("worker job = id %d kind %s attempt %d state %s; want id %d, test.work, attempt 1, running",
			got.row.ID, got.row.Kind, got.row.Attempt, got.row.State, id)
	}
	if !got.fromCtx || got.ctxRow == nil || got.ctxRow.ID != id {
		t.Errorf("JobFromContext = %v, %v; want job %d", got.ctxRow, got.fromCtx, id)
	}
	j := waitState(t, c, id, drover.JobStateCompleted)
	if j.Attempt != 1 || len(j.Errors) != 0 || j.FinalizedAt == nil {
		t.Errorf("completed job: attempt %d, errors %+v, finalized %v; want attempt 1, no errors, finalized", j.Attempt, j.Errors, j.FinalizedAt)
	}
	if _, ok := drover.JobFromContext(t.Context()); ok {
		t.Error("JobFromContext found a job outside a worker")
	}
}

func TestWorkerOutcomes(t *testing.T) {
	t.Parallel()
	onEachStore(t, testWorkerOutcomes)
}

func testWorkerOutcomes(t *testing.T, ls libStore) {

	t.Run("error retries with backoff", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			return errors.New("smtp: connection refused")
		}, drover.WorkerOpts{}), drover.Config{})
		before := time.Now()
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateRetryable)
		if j.Attempt != 1 || len(j.Errors) != 1 || j.Errors[0].Message != "smtp: connection refused" || j.Errors[0].Attempt != 1 {
			t.Fatalf("attempt %d, errors %+v; want attempt 1 with the worker's message", j.Attempt, j.Errors)
		}
		// The default backoff after attempt 1 is 16s plus jitter.
		if !j.ScheduledAt.After(before.Add(15 * time.Second)) {
			t.Fatalf("next run at %s, want after the default backoff (%s)", j.ScheduledAt, before.Add(15*time.Second))
		}
	})

	t.Run("worker backoff", func(t *testing.T) {
		t.Parallel()
		var attempts []int
		var mu sync.Mutex
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			return errors.New("boom")
		}, drover.WorkerOpts{Backoff: func(attempt int) time.Duration {
			mu.Lock()
			attempts = append(attempts, attempt)
			mu.Unlock()
			return 3 * time.Hour
		}}), drover.Config{})
		before := time.Now()
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateRetryable)
		if lo, hi := before.Add(3*time.Hour), time.Now().Add(3*time.Hour); j.ScheduledAt.Before(lo.Add(-time.Millisecond)) || j.ScheduledAt.After(hi) {
			t.Fatalf("next run at %s, want about 3h from now (%s..%s)", j.ScheduledAt, lo, hi)
		}
		mu.Lock()
		defer mu.Unlock()
		if !reflect.DeepEqual(attempts, []int{1}) {
			t.Fatalf("Backoff called with %v, want [1]", attempts)
		}
	})

	t.Run("panic", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			panic("kaboom")
		}, drover.WorkerOpts{}), drover.Config{})
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateRetryable)
		if j.Attempt != 1 || len(j.Errors) != 1 {
			t.Fatalf("attempt %d, errors %+v; want one failed attempt", j.Attempt, j.Errors)
		}
		if e := j.Errors[0]; e.Message != "panic: kaboom" || !strings.Contains(e.Detail, "worker_test.go") {
			t.Fatalf("error = %q with detail %q; want \"panic: kaboom\" and a stack naming worker_test.go", e.Message, e.Detail)
		}
	})

	t.Run("snooze", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			return drover.Snooze(time.Hour)
		}, drover.WorkerOpts{}), drover.Config{})
		before := time.Now()
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateScheduled)
		if j.Attempt != 0 || len(j.Errors) != 0 {
			t.Fatalf("snoozed job: attempt %d, errors %+v; want attempt 0 and no errors", j.Attempt, j.Errors)
		}
		if !j.ScheduledAt.After(before.Add(59 * time.Minute)) {
			t.Fatalf("snoozed until %s, want an hour from %s", j.ScheduledAt, before)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			return drover.Cancel(errors.New("account closed"))
		}, drover.WorkerOpts{}), drover.Config{})
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateCancelled)
		if len(j.Errors) != 1 || j.Errors[0].Message != "cancel: account closed" || j.FinalizedAt == nil {
			t.Fatalf("cancelled job: errors %+v, finalized %v", j.Errors, j.FinalizedAt)
		}
	})

	t.Run("discard", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			return drover.Discard(errors.New("bad input"))
		}, drover.WorkerOpts{}), drover.Config{})
		j := waitState(t, c, insert(t, c, testArgs{}, nil).ID, drover.JobStateDiscarded)
		if j.Attempt != 1 || len(j.Errors) != 1 || j.Errors[0].Message != "discard: bad input" {
			t.Fatalf("discarded job: attempt %d, errors %+v", j.Attempt, j.Errors)
		}
	})

	t.Run("retry in zero runs again at once", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(_ context.Context, j *drover.Job[testArgs]) error {
			if j.Attempt == 1 {
				return drover.RetryIn(errors.New("not yet"), 0)
			}
			return nil
		}, drover.WorkerOpts{}), drover.Config{})
		// Well under the default backoff of 16s and the promoter's tick.
		j := waitJob(t, c, insert(t, c, testArgs{}, nil).ID, 5*time.Second, "completed",
			func(j *drover.JobRow) bool { return j.State == drover.JobStateCompleted })
		if j.Attempt != 2 || len(j.Errors) != 1 || j.Errors[0].Message != "not yet" {
			t.Fatalf("job: attempt %d, errors %+v; want attempt 2 after one \"not yet\"", j.Attempt, j.Errors)
		}
	})

	t.Run("args that do not decode are discarded", func(t *testing.T) {
		t.Parallel()
		c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error {
			t.Error("worker called with args that do not decode")
			return nil
		}, drover.WorkerOpts{}), drover.Config{})
		// Same kind, incompatible shape: name is a number.
		j := waitState(t, c, insert(t, c, wrongShapeArgs{Name: 5}, nil).ID, drover.JobStateDiscarded)
		if len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Message, "decode args of test.work") {
			t.Fatalf("errors %+v, want a decode error", j.Errors)
		}
	})
}

// wrongShapeArgs has the kind of testArgs but not its shape.
type wrongShapeArgs struct {
	Name int `json:"name"`
}

func (wrongShapeArgs) Kind() string { return "test.work" }

func TestWorkerTimeout(t *testing.T) {
	t.Parallel()
	onEachStore(t, testWorkerTimeout)
}

func testWorkerTimeout(t *testing.T, ls libStore) {
	blockUntilDone := func(ctx context.Context, _ *drover.Job[testArgs]) error {
		<-ctx.Done()
		return ctx.Err()
	}
	for _, tc := range []struct {
		name   string
		cfg    drover.Config
		worker drover.WorkerOpts
		insert *drover.InsertOpts
		want   string
	}{
		{"worker timeout", drover.Config{}, drover.WorkerOpts{Timeout: 100 * time.Millisecond}, nil, "timed out after 100ms"},
		{"insert timeout wins over the worker's", drover.Config{}, drover.WorkerOpts{Timeout: time.Hour}, &drover.InsertOpts{Timeout: 150 * time.Millisecond}, "timed out after 150ms"},
		{"client timeout", drover.Config{JobTimeout: 120 * time.Millisecond}, drover.WorkerOpts{}, nil, "timed out after 120ms"},
		{"worker timeout wins over the client's", drover.Config{JobTimeout: time.Hour}, drover.WorkerOpts{Timeout: 110 * time.Millisecond}, nil, "timed out after 110ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := ls.startClient(t, workers(blockUntilDone, tc.worker), tc.cfg)
			j := waitState(t, c, insert(t, c, testArgs{}, tc.insert).ID, drover.JobStateRetryable)
			if len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Message, tc.want) {
				t.Fatalf("errors %+v, want one containing %q", j.Errors, tc.want)
			}
		})
	}
}

func TestNoWorkerForKind(t *testing.T) {
	t.Parallel()
	onEachStore(t, testNoWorkerForKind)
}

func testNoWorkerForKind(t *testing.T, ls libStore) {
	c := ls.startClient(t, workers(func(context.Context, *drover.Job[testArgs]) error { return nil }, drover.WorkerOpts{}), drover.Config{})
	j := waitState(t, c, insert(t, c, otherArgs{N: 1}, nil).ID, drover.JobStateRetryable)
	if j.Attempt != 1 || len(j.Errors) != 1 || !strings.Contains(j.Errors[0].Message, `"test.other"`) {
		t.Fatalf("attempt %d, errors %+v; want one failure naming the kind \"test.other\"", j.Attempt, j.Errors)
	}
}

// TestHeartbeatsKeepLongJobsAlive runs a job three times as long as its
// lease while the rescuer runs: only heartbeats can keep it from being
// rescued and run again.
func TestHeartbeatsKeepLongJobsAlive(t *testing.T) {
	t.Parallel()
	onEachStore(t, testHeartbeatsKeepLongJobsAlive)
}

func testHeartbeatsKeepLongJobsAlive(t *testing.T, ls libStore) {
	var interrupted atomic.Bool
	c := ls.startClient(t, workers(func(ctx context.Context, _ *drover.Job[testArgs]) error {
		select {
		case <-time.After(3 * time.Second): // the work
			return nil
		case <-ctx.Done():
			interrupted.Store(true)
			return context.Cause(ctx)
		}
	}, drover.WorkerOpts{}), drover.Config{LeaseFor: time.Second})
	j := waitJob(t, c, insert(t, c, testArgs{}, nil).ID, 20*time.Second, "completed",
		func(j *drover.JobRow) bool { return j.State == drover.JobStateCompleted })
	if j.Attempt != 1 || len(j.Errors) != 0 {
		t.Fatalf("completed at attempt %d with errors %+v; want attempt 1 and no lease expiry", j.Attempt, j.Errors)
	}
	if interrupted.Load() {
		t.Fatal("the worker's context was cancelled while it held a heartbeated lease")
	}
}

func TestOperatorCancelStopsWorker(t *testing.T) {
	t.Parallel()
	onEachStore(t, testOperatorCancelStopsWorker)
}

func testOperatorCancelStopsWorker(t *testing.T, ls libStore) {
	started := make(chan drover.JobID, 1)
	causes := make(chan error, 1)
	c := ls.startClient(t, workers(func(ctx context.Context, j *drover.Job[testArgs]) error {
		started <- j.ID
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}, drover.WorkerOpts{}), drover.Config{LeaseFor: time.Second})
	id := insert(t, c, testArgs{}, nil).ID
	recv(t, started, 10*time.Second, "worker start")
	cj, err := c.Cancel(t.Context(), id)
	if err != nil || cj.State != drover.JobStateCancelled {
		t.Fatalf("Cancel = %v, %v; want cancelled", cj, err)
	}
	// The next heartbeat (every LeaseFor/6) finds the lease revoked.
	cause := recv(t, causes, 5*time.Second, "worker ctx cancellation")
	if !errors.Is(cause, drover.ErrLeaseLost) {
		t.Fatalf("worker ctx cause = %v, want ErrLeaseLost", cause)
	}
	j, err := c.Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if j.State != drover.JobStateCancelled || len(j.Errors) != 0 {
		t.Fatalf("job after cancel: %s with errors %+v; want cancelled, the worker's late result dropped", j.State, j.Errors)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	onEachStore(t, testStop)
}

func testStop(t *testing.T, ls libStore) {

	t.Run("a job that finishes in time completes", func(t *testing.T) {
		t.Parallel()
		started := make(chan struct{}, 1)
		c := ls.startClient(t, workers(func(ctx context.Context, _ *drover.Job[testArgs]) error {
			started <- struct{}{}
			<-time.After(300 * time.Millisecond) // the work, which ignores ctx
			return nil
		}, drover.WorkerOpts{}), drover.Config{})
		id := insert(t, c, testArgs{}, nil).ID
		recv(t, started, 10*time.Second, "worker start")
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		j, err := c.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != drover.JobStateCompleted || j.Attempt != 1 {
			t.Fatalf("after Stop the job is %s at attempt %d, want completed at attempt 1", j.State, j.Attempt)
		}
	})

	t.Run("a job still running is given back", func(t *testing.T) {
		t.Parallel()
		started := make(chan struct{}, 1)
		returned := make(chan error, 1)
		c := ls.startClient(t, workers(func(ctx context.Context, _ *drover.Job[testArgs]) error {
			started <- struct{}{}
			<-ctx.Done()
			returned <- ctx.Err()
			return ctx.Err()
		}, drover.WorkerOpts{}), drover.Config{})
		id := insert(t, c, testArgs{}, nil).ID
		recv(t, started, 10*time.Second, "worker start")
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		if err := c.Stop(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Stop = %v, want context.DeadlineExceeded", err)
		}
		if err := recv(t, returned, time.Second, "worker return"); !errors.Is(err, context.Canceled) {
			t.Fatalf("worker ctx err = %v, want context.Canceled", err)
		}
		j, err := c.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State != drover.JobStateAvailable || j.Attempt != 0 || len(j.Errors) != 0 {
			t.Fatalf("after Stop the job is %s at attempt %d with errors %+v; want available at attempt 0 with none", j.State, j.Attempt, j.Errors)
		}
	})
}

func TestQueueConcurrencyLimit(t *testing.T) {
	t.Parallel()
	onEachStore(t, testQueueConcurrencyLimit)
}

func testQueueConcurrencyLimit(t *testing.T, ls libStore) {
	const limit, jobs = 3, 20
	var (
		mu      sync.Mutex
		running int
		peak    int
		changed = make(chan struct{})
	)
	// bump changes the running count and wakes the workers watching it.
	bump := func(d int) {
		mu.Lock()
		defer mu.Unlock()
		running += d
		peak = max(peak, running)
		close(changed)
		changed = make(chan struct{})
	}
	finished := make(chan struct{}, jobs)
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(ctx context.Context, _ *drover.Job[testArgs]) error {
		bump(1)
		defer func() { bump(-1); finished <- struct{}{} }()
		// Hold the slot until the queue is full (or a while, for the last
		// jobs, which cannot fill it), then a little longer: a fourth job
		// would start and overlap then if the limit leaked.
		timer := time.NewTimer(500 * time.Millisecond)
		defer timer.Stop()
	fill:
		for {
			mu.Lock()
			full, ch := running >= limit, changed
			mu.Unlock()
			if full {
				break
			}
			select {
			case <-ch:
			case <-timer.C:
				break fill
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-time.After(30 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}))
	c := ls.startClient(t, ws, drover.Config{Queues: map[string]drover.QueueConfig{"limited": {MaxWorkers: limit}}})
	params := make([]drover.InsertManyParams, jobs)
	for i := range params {
		params[i] = drover.InsertManyParams{Args: testArgs{Inner: innerArgs{N: i}}, Opts: &drover.InsertOpts{Queue: "limited"}}
	}
	res, err := c.InsertMany(t.Context(), params)
	if err != nil {
		t.Fatalf("InsertMany: %v", err)
	}
	for i := range jobs {
		recv(t, finished, 20*time.Second, fmt.Sprintf("finish of job %d of %d", i+1, jobs))
	}
	mu.Lock()
	p := peak
	mu.Unlock()
	if p != limit {
		t.Fatalf("%d jobs ran at once at the peak, want exactly %d (MaxWorkers)", p, limit)
	}
	for _, r := range res {
		waitState(t, c, r.Job.ID, drover.JobStateCompleted)
	}
}
