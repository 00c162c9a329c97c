package drover

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// Worker works jobs of one args type. Work is called once per attempt, in
// its own goroutine, with a context that carries the attempt's deadline and
// is cancelled when the client stops hard or the job's lease is lost.
// Returning nil completes the job; an error fails the attempt (see Snooze,
// Cancel, Discard and RetryIn for the other outcomes); a panic fails the
// attempt with its stack recorded.
type Worker[T JobArgs] interface {
	Work(ctx context.Context, job *Job[T]) error
}

// WorkFunc adapts a function to a Worker.
func WorkFunc[T JobArgs](f func(ctx context.Context, job *Job[T]) error) Worker[T] {
	return workFunc[T](f)
}

type workFunc[T JobArgs] func(ctx context.Context, job *Job[T]) error

// Work implements Worker.
func (f workFunc[T]) Work(ctx context.Context, j *Job[T]) error { return f(ctx, j) }

// WorkerOpts tune one kind's worker.
type WorkerOpts struct {
	// Timeout limits each attempt when the job gives none; zero means the
	// client's JobTimeout, negative means no limit.
	Timeout time.Duration
	// Backoff decides the wait before the next attempt after attempt
	// failed; nil means attempt^4 + 15s plus up to 30% jitter.
	Backoff func(attempt int) time.Duration
}

// Workers is the registry of workers by kind. Add workers with AddWorker
// before passing it to NewClient; it is not safe to add while a client runs.
type Workers struct {
	byKind map[string]*workerEntry
}

type workerEntry struct {
	kind string
	opts WorkerOpts
	work func(ctx context.Context, row *job.Job) error
}

// NewWorkers returns an empty registry.
func NewWorkers() *Workers { return &Workers{byKind: map[string]*workerEntry{}} }

// AddWorker registers w for the kind of T. It panics if the kind is
// invalid or already registered: both are programming errors found at
// start-up.
func AddWorker[T JobArgs](ws *Workers, w Worker[T]) {
	AddWorkerWithOpts(ws, w, WorkerOpts{})
}

// AddWorkerWithOpts is AddWorker with options for this kind.
func AddWorkerWithOpts[T JobArgs](ws *Workers, w Worker[T], opts WorkerOpts) {
	var zero T
	kind := zero.Kind()
	if err := job.ValidateName(kind); err != nil {
		panic(fmt.Sprintf("drover: AddWorker: kind %q: %v", kind, err))
	}
	if _, dup := ws.byKind[kind]; dup {
		panic(fmt.Sprintf("drover: AddWorker: kind %q registered twice", kind))
	}
	ws.byKind[kind] = &workerEntry{
		kind: kind,
		opts: opts,
		work: func(ctx context.Context, row *job.Job) error {
			var args T
			if err := json.Unmarshal(row.Args, &args); err != nil {
				return Discard(fmt.Errorf("decode args of %s: %w", kind, err))
			}
			return w.Work(ctx, &Job[T]{JobRow: row, Args: args})
		},
	}
}
