package drover_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.DiscardHandler)

// testArgs are the args of most test jobs.
type testArgs struct {
	Name  string     `json:"name"`
	Inner innerArgs  `json:"inner"`
	List  []int      `json:"list,omitempty"`
	Ptr   *innerArgs `json:"ptr,omitempty"`
}

type innerArgs struct {
	N    int               `json:"n"`
	Tags map[string]string `json:"tags,omitempty"`
}

func (testArgs) Kind() string { return "test.work" }

// otherArgs is a second kind.
type otherArgs struct {
	N int `json:"n"`
}

func (otherArgs) Kind() string { return "test.other" }

// openStore opens a fresh embedded store, closed when the test ends (after
// the clients, whose cleanups run first).
func openStore(t *testing.T) *drover.Store {
	t.Helper()
	st, err := drover.OpenEmbedded(t.TempDir(), &drover.EmbeddedOptions{NoSync: true, Logger: discard})
	if err != nil {
		t.Fatalf("OpenEmbedded: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// newClient returns a client over a fresh store. With workers and no
// queues in cfg it works the default queue.
func newClient(t *testing.T, workers *drover.Workers, cfg drover.Config) *drover.Client {
	t.Helper()
	return newClientOn(t, openStore(t), workers, cfg)
}

// newClientOn is newClient over st.
func newClientOn(t *testing.T, st *drover.Store, workers *drover.Workers, cfg drover.Config) *drover.Client {
	t.Helper()
	cfg.Workers = workers
	if workers != nil && cfg.Queues == nil {
		cfg.Queues = map[string]drover.QueueConfig{"default": {MaxWorkers: 10}}
	}
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	c, err := drover.NewClient(st, &cfg)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// startClient is newClient, started and stopped when the test ends.
func startClient(t *testing.T, workers *drover.Workers, cfg drover.Config) *drover.Client {
	t.Helper()
	return startClientOn(t, openStore(t), workers, cfg)
}

// startClientOn is startClient over st.
func startClientOn(t *testing.T, st *drover.Store, workers *drover.Workers, cfg drover.Config) *drover.Client {
	t.Helper()
	c := newClientOn(t, st, workers, cfg)
	if err := c.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) //nolint:usetesting // t.Context is done when cleanups run
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return c
}

func insert(t *testing.T, c *drover.Client, args drover.JobArgs, opts *drover.InsertOpts) *drover.JobRow {
	t.Helper()
	res, err := c.Insert(t.Context(), args, opts)
	if err != nil {
		t.Fatalf("Insert: %v", err)
	}
	return res.Job
}

// waitJob polls job id until cond holds and fails the test after within.
func waitJob(t *testing.T, c *drover.Client, id drover.JobID, within time.Duration, what string, cond func(*drover.JobRow) bool) *drover.JobRow {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := c.Get(t.Context(), id)
		if err != nil {
			t.Fatalf("Get(%d): %v", id, err)
		}
		if cond(j) {
			return j
		}
		select {
		case <-deadline.C:
			t.Fatalf("job %d not %s within %s; last seen: state %s attempt %d errors %+v", id, what, within, j.State, j.Attempt, j.Errors)
		case <-tick.C:
		}
	}
}

func waitState(t *testing.T, c *drover.Client, id drover.JobID, want drover.JobState) *drover.JobRow {
	t.Helper()
	return waitJob(t, c, id, 10*time.Second, string(want), func(j *drover.JobRow) bool { return j.State == want })
}

// recv receives from ch or fails the test after within.
func recv[T any](t *testing.T, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s: nothing within %s", what, within)
		var zero T
		return zero
	}
}

func mustPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		if v == nil {
			t.Fatalf("no panic, want one mentioning %q", want)
		}
		if msg, _ := v.(string); !strings.Contains(msg, want) {
			t.Fatalf("panic %v, want one mentioning %q", v, want)
		}
	}()
	f()
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	workers := drover.NewWorkers()
	drover.AddWorker(workers, drover.WorkFunc(func(context.Context, *drover.Job[testArgs]) error { return nil }))

	for _, tc := range []struct {
		name string
		cfg  drover.Config
		want string
	}{
		{"queues without workers", drover.Config{Queues: map[string]drover.QueueConfig{"default": {}}}, "Workers"},
		{"invalid queue name", drover.Config{Queues: map[string]drover.QueueConfig{"bad queue": {}}, Workers: workers}, "bad queue"},
		{"empty queue name", drover.Config{Queues: map[string]drover.QueueConfig{"": {}}, Workers: workers}, "queue"},
		{"negative MaxWorkers", drover.Config{Queues: map[string]drover.QueueConfig{"q": {MaxWorkers: -1}}, Workers: workers}, "MaxWorkers"},
		{"lease under a second", drover.Config{LeaseFor: 500 * time.Millisecond}, "LeaseFor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := openStore(t)
			c, err := drover.NewClient(st, &tc.cfg)
			if err == nil || c != nil {
				t.Fatalf("NewClient = %v, %v; want an error", c, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewClient err = %q, want it to mention %q", err, tc.want)
			}
		})
	}

	t.Run("nil store", func(t *testing.T) {
		t.Parallel()
		if c, err := drover.NewClient(nil, nil); err == nil {
			t.Fatalf("NewClient(nil) = %v, want an error", c)
		}
	})

	t.Run("nil config inserts only", func(t *testing.T) {
		t.Parallel()
		c, err := drover.NewClient(openStore(t), nil)
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		if j := insert(t, c, testArgs{Name: "a"}, nil); j.State != drover.JobStateAvailable {
			t.Fatalf("inserted job is %s, want available", j.State)
		}
	})
}

func TestClientStartStop(t *testing.T) {
	t.Parallel()

	t.Run("stop without start", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("Stop without Start: %v", err)
		}
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
	})

	t.Run("start twice", func(t *testing.T) {
		t.Parallel()
		workers := drover.NewWorkers()
		drover.AddWorker(workers, drover.WorkFunc(func(context.Context, *drover.Job[testArgs]) error { return nil }))
		c := startClient(t, workers, drover.Config{})
		if err := c.Start(t.Context()); err == nil {
			t.Fatal("second Start succeeded, want an error")
		}
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if err := c.Stop(t.Context()); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		if err := c.Start(t.Context()); err == nil {
			t.Fatal("Start after Stop succeeded, want an error")
		}
	})

	t.Run("insert-only client with maintenance", func(t *testing.T) {
		t.Parallel()
		c := startClient(t, nil, drover.Config{})
		// The promoter runs: a job scheduled a millisecond ahead becomes
		// available without anyone working the queue.
		j := insert(t, c, testArgs{Name: "x"}, &drover.InsertOpts{ScheduleIn: time.Millisecond})
		waitState(t, c, j.ID, drover.JobStateAvailable)
	})
}

func TestInsertManyIsAtomic(t *testing.T) {
	t.Parallel()
	unique := &drover.InsertOpts{Unique: &drover.UniqueOpts{Key: "once"}}

	t.Run("a job that breaks a rule", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		_, err := c.InsertMany(t.Context(), []drover.InsertManyParams{
			{Args: testArgs{Name: "ok"}, Opts: unique},
			{Args: testArgs{Name: "bad"}, Opts: &drover.InsertOpts{Priority: 42}},
		})
		wantField(t, err, "jobs[1].priority")
		res, err := c.Insert(t.Context(), testArgs{Name: "ok"}, unique)
		if err != nil || res.Duplicate {
			t.Fatalf("Insert after the failed batch = %+v, %v; want a new job (the batch inserted nothing)", res, err)
		}
	})

	t.Run("a missing dependency", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		_, err := c.InsertMany(t.Context(), []drover.InsertManyParams{
			{Args: testArgs{Name: "ok"}, Opts: unique},
			{Args: otherArgs{N: 1}, Opts: &drover.InsertOpts{DependsOn: []drover.JobID{987654}}},
		})
		wantField(t, err, "jobs[1].depends_on[0]")
		res, err := c.Insert(t.Context(), testArgs{Name: "ok"}, unique)
		if err != nil || res.Duplicate {
			t.Fatalf("Insert after the failed batch = %+v, %v; want a new job (the batch inserted nothing)", res, err)
		}
	})

	t.Run("args that do not encode", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		_, err := c.InsertMany(t.Context(), []drover.InsertManyParams{{Args: testArgs{}}, {Args: unencodableArgs{C: make(chan int)}}})
		wantField(t, err, "jobs[1].args")
		_, err = c.Insert(t.Context(), unencodableArgs{C: make(chan int)}, nil)
		wantField(t, err, "args")
	})

	t.Run("nil args", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		_, err := c.InsertMany(t.Context(), []drover.InsertManyParams{{Args: testArgs{}}, {}})
		wantField(t, err, "jobs[1].args")
		_, err = c.Insert(t.Context(), nil, nil)
		wantField(t, err, "args")
	})

	t.Run("empty batch", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		_, err := c.InsertMany(t.Context(), nil)
		wantField(t, err, "jobs")
	})

	t.Run("all inserted in order", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, nil, drover.Config{})
		res, err := c.InsertMany(t.Context(), []drover.InsertManyParams{
			{Args: testArgs{Name: "a"}},
			{Args: otherArgs{N: 2}, Opts: &drover.InsertOpts{Queue: "q2"}},
		})
		if err != nil {
			t.Fatalf("InsertMany: %v", err)
		}
		if len(res) != 2 || res[0].Job.Kind != "test.work" || res[1].Job.Kind != "test.other" || res[1].Job.Queue != "q2" || res[0].Job.ID >= res[1].Job.ID {
			t.Fatalf("InsertMany results = %+v %+v", res[0].Job, res[1].Job)
		}
	})
}

// unencodableArgs cannot be encoded to JSON.
type unencodableArgs struct {
	C chan int `json:"c"`
}

func (unencodableArgs) Kind() string { return "test.unencodable" }

// wantField checks that err is a *drover.ValidationError on field.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	var ve *drover.ValidationError
	if !errors.As(err, &ve) || ve.Field != field || !errors.Is(err, drover.ErrInvalid) {
		t.Fatalf("err = %v, want a ValidationError on %q", err, field)
	}
}

// defaultedArgs carry their own insert options.
type defaultedArgs struct {
	N int `json:"n"`
}

func (defaultedArgs) Kind() string { return "test.defaulted" }

func (defaultedArgs) InsertOpts() drover.InsertOpts {
	return drover.InsertOpts{
		Queue: "mail", Priority: 7, MaxAttempts: 3, Tags: []string{"from-args"},
		Timeout: time.Minute, Unique: &drover.UniqueOpts{ByArgs: true},
	}
}

func TestInsertOptsMerge(t *testing.T) {
	t.Parallel()
	c := newClient(t, nil, drover.Config{})

	j := insert(t, c, defaultedArgs{N: 1}, nil)
	if j.Queue != "mail" || j.Priority != 7 || j.MaxAttempts != 3 || !slices.Equal(j.Tags, []string{"from-args"}) || j.Timeout != time.Minute || j.UniqueKey == "" {
		t.Fatalf("with no opts: %+v; want the args' defaults", j)
	}

	j = insert(t, c, defaultedArgs{N: 2}, &drover.InsertOpts{Priority: 2, Tags: []string{"explicit"}})
	if j.Queue != "mail" || j.Priority != 2 || j.MaxAttempts != 3 || !slices.Equal(j.Tags, []string{"explicit"}) || j.Timeout != time.Minute {
		t.Fatalf("with priority and tags: %+v; want those explicit, the rest defaulted", j)
	}

	j = insert(t, c, defaultedArgs{N: 3}, &drover.InsertOpts{Queue: "other", MaxAttempts: 9, ScheduleIn: time.Hour})
	if j.Queue != "other" || j.Priority != 7 || j.MaxAttempts != 9 || j.State != drover.JobStateScheduled {
		t.Fatalf("with queue, attempts and schedule: %+v; want those explicit, the rest defaulted", j)
	}

	// The args' unique-by-args default holds: the same args again is a
	// duplicate.
	res, err := c.Insert(t.Context(), defaultedArgs{N: 1}, nil)
	if err != nil || !res.Duplicate {
		t.Fatalf("second insert of the same unique args = %+v, %v; want a duplicate", res, err)
	}
}

func TestAddWorkerPanics(t *testing.T) {
	t.Parallel()
	noop := drover.WorkFunc(func(context.Context, *drover.Job[testArgs]) error { return nil })

	t.Run("duplicate kind", func(t *testing.T) {
		t.Parallel()
		ws := drover.NewWorkers()
		drover.AddWorker(ws, noop)
		mustPanic(t, "registered twice", func() { drover.AddWorker(ws, noop) })
	})

	t.Run("invalid kind", func(t *testing.T) {
		t.Parallel()
		ws := drover.NewWorkers()
		mustPanic(t, "bad kind!", func() {
			drover.AddWorker(ws, drover.WorkFunc(func(context.Context, *drover.Job[badKindArgs]) error { return nil }))
		})
	})
}

type badKindArgs struct{}

func (badKindArgs) Kind() string { return "bad kind!" }
