package drover

import (
	"context"
	"encoding/json"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// JobArgs is implemented by the args of every job: a struct that encodes to
// JSON and names its kind. The kind routes the job to its worker.
//
//	type EmailArgs struct {
//		To string `json:"to"`
//	}
//
//	func (EmailArgs) Kind() string { return "email.send" }
type JobArgs interface {
	Kind() string
}

// JobArgsWithInsertOpts is implemented by args that carry their own
// default insert options (a queue, a priority, uniqueness ...). Options
// given at insert time win field by field.
type JobArgsWithInsertOpts interface {
	JobArgs
	InsertOpts() InsertOpts
}

// JobRow is a job as stored: its identity, state, attempts, schedule and
// error history, with args still encoded.
type JobRow = job.Job

// JobID identifies a job.
type JobID = job.ID

// JobState is where a job is in its life.
type JobState = job.State

// AttemptError is one entry of a job's failure history.
type AttemptError = job.AttemptError

// The job states.
const (
	JobStatePending   = job.StatePending
	JobStateScheduled = job.StateScheduled
	JobStateAvailable = job.StateAvailable
	JobStateRunning   = job.StateRunning
	JobStateRetryable = job.StateRetryable
	JobStateCompleted = job.StateCompleted
	JobStateCancelled = job.StateCancelled
	JobStateDiscarded = job.StateDiscarded
)

// Job is a job handed to a Worker: the stored row with its args decoded.
type Job[T JobArgs] struct {
	*JobRow
	// Args are the job's decoded args.
	Args T
}

// InsertOpts are the options of one insert. Zero values mean the defaults:
// queue "default", priority 5, 25 attempts, run now.
type InsertOpts struct {
	Queue string
	// Priority runs from 1 (first) to 9 (last).
	Priority    int
	MaxAttempts int
	// RunAt (or ScheduleIn, not both) delays the first run.
	RunAt      time.Time
	ScheduleIn time.Duration
	// Timeout limits each attempt; zero means the worker's timeout.
	Timeout time.Duration
	Unique  *UniqueOpts
	Tags    []string
	// Metadata is a JSON object for labels and search.
	Metadata  json.RawMessage
	DependsOn []JobID
}

// UniqueOpts makes a job unique within its kind while it is live (not
// finished): an insert whose key is held returns the existing job with
// Duplicate set. With Period, the key is also held by a completed job for
// the rest of its period window, so the kind runs at most once per period.
type UniqueOpts struct {
	// Key is an explicit key. Without Key and ByArgs the kind alone is the
	// key.
	Key string
	// ByArgs derives the key from the args (canonical JSON).
	ByArgs bool
	Period time.Duration
}

// InsertResult is the outcome of one insert.
type InsertResult struct {
	Job *JobRow
	// Duplicate reports that a live job held the unique key; Job is that
	// job and nothing was inserted.
	Duplicate bool
}

// InsertManyParams is one job of InsertMany.
type InsertManyParams struct {
	Args JobArgs
	Opts *InsertOpts
}

// toSpec encodes args and merges the options: opts over the args' own
// defaults.
func toSpec(args JobArgs, opts *InsertOpts) (job.Spec, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return job.Spec{}, &job.ValidationError{Field: "args", Message: "encode: " + err.Error()}
	}
	var o InsertOpts
	if d, ok := args.(JobArgsWithInsertOpts); ok {
		o = d.InsertOpts()
	}
	if opts != nil {
		o = mergeOpts(o, *opts)
	}
	sp := job.Spec{
		Kind: args.Kind(), Queue: o.Queue, Args: raw, Priority: o.Priority,
		MaxAttempts: o.MaxAttempts, RunAt: o.RunAt, Delay: o.ScheduleIn, Timeout: o.Timeout,
		Tags: o.Tags, Metadata: o.Metadata, DependsOn: o.DependsOn,
	}
	if o.Unique != nil {
		sp.Unique = &job.UniqueOpts{Key: o.Unique.Key, ByArgs: o.Unique.ByArgs, Period: o.Unique.Period}
	}
	return sp, nil
}

func mergeOpts(base, over InsertOpts) InsertOpts {
	if over.Queue != "" {
		base.Queue = over.Queue
	}
	if over.Priority != 0 {
		base.Priority = over.Priority
	}
	if over.MaxAttempts != 0 {
		base.MaxAttempts = over.MaxAttempts
	}
	if !over.RunAt.IsZero() || over.ScheduleIn != 0 {
		base.RunAt, base.ScheduleIn = over.RunAt, over.ScheduleIn
	}
	if over.Timeout != 0 {
		base.Timeout = over.Timeout
	}
	if over.Unique != nil {
		base.Unique = over.Unique
	}
	if over.Tags != nil {
		base.Tags = over.Tags
	}
	if over.Metadata != nil {
		base.Metadata = over.Metadata
	}
	if over.DependsOn != nil {
		base.DependsOn = over.DependsOn
	}
	return base
}

type jobCtxKey struct{}

// JobFromContext returns the job whose worker ctx belongs to, for code
// deep in a worker's call tree that wants its ID or attempt.
func JobFromContext(ctx context.Context) (*JobRow, bool) {
	j, ok := ctx.Value(jobCtxKey{}).(*JobRow)
	return j, ok
}
