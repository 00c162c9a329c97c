package job

import (
	"encoding/json"
	"time"
)

// ID identifies a job. Stores assign IDs in increasing order.
type ID int64

// State is where a job is in its life. See the package documentation of
// internal/engine for the full state machine.
type State string

// The job states. The string values are API: they appear in REST, gRPC,
// GraphQL, the CLI and the stores' schemas.
const (
	// StatePending waits for the jobs in DependsOn to complete.
	StatePending State = "pending"
	// StateScheduled waits for its scheduled time (run_at in the future).
	StateScheduled State = "scheduled"
	// StateAvailable may be leased by a worker now.
	StateAvailable State = "available"
	// StateRunning is leased by a worker and has one live lease token.
	StateRunning State = "running"
	// StateRetryable failed an attempt and waits for its next run time.
	StateRetryable State = "retryable"
	// StateCompleted finished successfully. Final.
	StateCompleted State = "completed"
	// StateCancelled was cancelled by an operator or by its worker. Final.
	StateCancelled State = "cancelled"
	// StateDiscarded exhausted its attempts or was discarded by its
	// worker: the dead-letter set. Final.
	StateDiscarded State = "discarded"
)

// States lists every state in lifecycle order.
var States = []State{
	StatePending, StateScheduled, StateAvailable, StateRunning,
	StateRetryable, StateCompleted, StateCancelled, StateDiscarded,
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool {
	switch s {
	case StatePending, StateScheduled, StateAvailable, StateRunning,
		StateRetryable, StateCompleted, StateCancelled, StateDiscarded:
		return true
	}
	return false
}

// Final reports whether s is a final state: completed, cancelled or
// discarded. A job in a final state never changes again except by an
// explicit operator retry.
func (s State) Final() bool {
	return s == StateCompleted || s == StateCancelled || s == StateDiscarded
}

// Defaults and limits of the job model.
const (
	DefaultQueue       = "default"
	DefaultPriority    = 5
	MinPriority        = 1
	MaxPriority        = 9
	DefaultMaxAttempts = 25
	// DefaultMaxArgsBytes is the default limit on the encoded size of args.
	DefaultMaxArgsBytes = 1 << 20
	// MaxNameLen bounds kinds, queues and tags.
	MaxNameLen = 128
	// MaxTags bounds the number of tags on one job.
	MaxTags = 32
	// MaxDependsOn bounds the number of dependencies of one job.
	MaxDependsOn = 1000
	// MaxJSONDepth bounds the nesting of args, metadata and output.
	MaxJSONDepth = 64
	// MaxErrorMessageBytes bounds one error message in the history; longer
	// messages are truncated on a UTF-8 boundary.
	MaxErrorMessageBytes = 4 << 10
	// MaxErrorDetailBytes bounds one error detail (a stack trace, say).
	MaxErrorDetailBytes = 16 << 10
)

// Job is one unit of background work and everything Drover knows about it.
// Stores return fresh copies; callers may keep and modify them freely.
type Job struct {
	ID          ID              `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args"`
	Priority    int             `json:"priority"`
	State       State           `json:"state"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	// Timeout limits one attempt; zero means the worker's default.
	Timeout time.Duration `json:"timeout,omitempty"`
	// UniqueKey is the key that keeps this job unique while it holds it;
	// empty when the job has none or has released it.
	UniqueKey string          `json:"unique_key,omitempty"`
	Tags      []string        `json:"tags,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	DependsOn []ID            `json:"depends_on,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	Errors    []AttemptError  `json:"errors,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	// CreatedBy names who enqueued the job, when known ("token:7").
	CreatedBy string `json:"created_by,omitempty"`
	// ScheduledAt is when the job may next run; it orders the fetch.
	ScheduledAt time.Time  `json:"scheduled_at"`
	AttemptedAt *time.Time `json:"attempted_at,omitempty"`
	FinalizedAt *time.Time `json:"finalized_at,omitempty"`
	// AttemptedBy names the worker that holds or last held the lease.
	AttemptedBy string `json:"attempted_by,omitempty"`
	// LeaseToken is the live lease's token; set only on jobs returned by
	// a lease, never by reads, so that a token is only known to its holder.
	LeaseToken string `json:"lease_token,omitempty"`
	// LeaseExpiresAt is when the live lease ends unless extended.
	LeaseExpiresAt *time.Time `json:"lease_expires_at,omitempty"`
}

// AttemptError is one entry of a job's failure history.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Message string    `json:"message"`
	// Detail is optional, for example the stack of a panic.
	Detail string `json:"detail,omitempty"`
}

// Clone returns a deep copy of j.
func (j *Job) Clone() *Job {
	if j == nil {
		return nil
	}
	c := *j
	c.Args = cloneBytes(j.Args)
	c.Metadata = cloneBytes(j.Metadata)
	c.Output = cloneBytes(j.Output)
	c.Tags = append([]string(nil), j.Tags...)
	c.DependsOn = append([]ID(nil), j.DependsOn...)
	c.Errors = append([]AttemptError(nil), j.Errors...)
	c.AttemptedAt = cloneTime(j.AttemptedAt)
	c.FinalizedAt = cloneTime(j.FinalizedAt)
	c.LeaseExpiresAt = cloneTime(j.LeaseExpiresAt)
	return &c
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte(nil), b...)
}

func cloneTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

// FetchLess reports whether a runs before b in the fetch order: priority
// ascending, then scheduled_at, then id.
func FetchLess(a, b *Job) bool {
	if a.Priority != b.Priority {
		return a.Priority < b.Priority
	}
	if !a.ScheduledAt.Equal(b.ScheduledAt) {
		return a.ScheduledAt.Before(b.ScheduledAt)
	}
	return a.ID < b.ID
}

// Truncate rounds t to the precision every store keeps (microseconds, in
// UTC), so that a time read back equals the time written.
func Truncate(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}
