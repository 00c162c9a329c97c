package httpapi

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Duration is a time.Duration that travels as a Go duration string such
// as "1.5s" or "250ms".
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"1.5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration such as \"1.5s\", \"250ms\" or \"2h\"", s)
	}
	*d = Duration(v)
	return nil
}

// Schema implements huma.SchemaProvider.
func (Duration) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{
		Type:        "string",
		Description: `A duration: a decimal number with a unit (ns, us, ms, s, m, h), such as "1.5s" or "2h45m".`,
		Pattern:     `^[-+]?([0-9]*(\.[0-9]*)?[a-zµ]+)+$`,
		Examples:    []any{"30s"},
	}
}

// Job is a job on the wire.
type Job struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args" doc:"The job's arguments: any JSON value."`
	Priority    int             `json:"priority"`
	State       string          `json:"state" enum:"pending,scheduled,available,running,retryable,completed,cancelled,discarded"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	Timeout     *Duration       `json:"timeout,omitempty"`
	UniqueKey   string          `json:"unique_key,omitempty"`
	Tags        []string        `json:"tags,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
	DependsOn   []int64         `json:"depends_on,omitempty"`
	Output      json.RawMessage `json:"output,omitempty"`
	Errors      []AttemptError  `json:"errors,omitempty"`
	CreatedAt   time.Time       `json:"created_at"`
	CreatedBy   string          `json:"created_by,omitempty" doc:"Who enqueued the job: token:ID when tokens are in use."`
	ScheduledAt time.Time       `json:"scheduled_at"`
	AttemptedAt *time.Time      `json:"attempted_at,omitempty"`
	FinalizedAt *time.Time      `json:"finalized_at,omitempty"`
	AttemptedBy string          `json:"attempted_by,omitempty"`
	LeaseToken  string          `json:"lease_token,omitempty" doc:"Only in lease responses: the token that settles this attempt."`
	LeaseExpiry *time.Time      `json:"lease_expires_at,omitempty"`
	Duplicate   bool            `json:"duplicate,omitempty" doc:"Set when a unique job was already live: this is that job and nothing was inserted."`
}

// AttemptError is one failed attempt in a job's history.
type AttemptError struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Message string    `json:"message"`
	Detail  string    `json:"detail,omitempty"`
}

func toJob(j *job.Job) Job {
	out := Job{
		ID: int64(j.ID), Kind: j.Kind, Queue: j.Queue, Args: j.Args, Priority: j.Priority,
		State: string(j.State), Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
		UniqueKey: j.UniqueKey, Tags: j.Tags, Metadata: j.Metadata, Output: j.Output,
		CreatedAt: j.CreatedAt, CreatedBy: j.CreatedBy, ScheduledAt: j.ScheduledAt, AttemptedAt: j.AttemptedAt,
		FinalizedAt: j.FinalizedAt, AttemptedBy: j.AttemptedBy, LeaseToken: j.LeaseToken,
		LeaseExpiry: j.LeaseExpiresAt,
	}
	if len(out.Args) == 0 {
		out.Args = json.RawMessage("null")
	}
	if j.Timeout > 0 {
		d := Duration(j.Timeout)
		out.Timeout = &d
	}
	for _, id := range j.DependsOn {
		out.DependsOn = append(out.DependsOn, int64(id))
	}
	for _, e := range j.Errors {
		out.Errors = append(out.Errors, AttemptError(e))
	}
	return out
}

func toJobs(js []*job.Job) []Job {
	out := make([]Job, len(js))
	for i, j := range js {
		out[i] = toJob(j)
	}
	return out
}

// EnqueueRequest is one job to enqueue.
type EnqueueRequest struct {
	Kind        string          `json:"kind" minLength:"1" maxLength:"128" pattern:"^[A-Za-z0-9_.:-]+$" doc:"The job type a worker handles."`
	Args        json.RawMessage `json:"args,omitempty" doc:"Any JSON value; null when absent."`
	Queue       string          `json:"queue,omitempty" maxLength:"128" doc:"Default \"default\"."`
	Priority    int             `json:"priority,omitempty" minimum:"0" maximum:"9" doc:"1 runs first, 9 last; default 5."`
	RunAt       *time.Time      `json:"run_at,omitempty" doc:"When the job may first run (RFC 3339)."`
	Delay       *Duration       `json:"delay,omitempty" doc:"Or: how long from now until it may first run."`
	MaxAttempts int             `json:"max_attempts,omitempty" minimum:"0" doc:"Default 25."`
	Timeout     *Duration       `json:"timeout,omitempty" doc:"Per-attempt time limit."`
	Unique      *UniqueRequest  `json:"unique,omitempty"`
	Tags        []string        `json:"tags,omitempty" maxItems:"32"`
	Metadata    json.RawMessage `json:"metadata,omitempty" doc:"A JSON object of labels."`
	DependsOn   []int64         `json:"depends_on,omitempty" doc:"Jobs that must complete before this one becomes available."`
}

// UniqueRequest makes a job unique within its kind.
type UniqueRequest struct {
	Key    string    `json:"key,omitempty" doc:"An explicit unique key."`
	ByArgs bool      `json:"by_args,omitempty" doc:"Derive the key from the args."`
	Period *Duration `json:"period,omitempty" doc:"Hold the key for windows of this length, also after completion."`
}

func (r *EnqueueRequest) spec() job.Spec {
	sp := job.Spec{
		Kind: r.Kind, Queue: r.Queue, Args: r.Args, Priority: r.Priority,
		MaxAttempts: r.MaxAttempts, Tags: r.Tags, Metadata: r.Metadata,
	}
	if r.RunAt != nil {
		sp.RunAt = *r.RunAt
	}
	if r.Delay != nil {
		sp.Delay = time.Duration(*r.Delay)
	}
	if r.Timeout != nil {
		sp.Timeout = time.Duration(*r.Timeout)
	}
	if r.Unique != nil {
		u := &job.UniqueOpts{Key: r.Unique.Key, ByArgs: r.Unique.ByArgs}
		if r.Unique.Period != nil {
			u.Period = time.Duration(*r.Unique.Period)
		}
		sp.Unique = u
	}
	for _, id := range r.DependsOn {
		sp.DependsOn = append(sp.DependsOn, job.ID(id))
	}
	return sp
}

// Queue is one queue with its counts.
type Queue struct {
	Name   string         `json:"name"`
	Paused bool           `json:"paused"`
	Counts map[string]int `json:"counts" doc:"Jobs per state; every state is present."`
}

func toQueue(q store.QueueInfo) Queue {
	out := Queue{Name: q.Name, Paused: q.Paused, Counts: map[string]int{}}
	for _, st := range job.States {
		out.Counts[string(st)] = q.Counts[st]
	}
	return out
}
