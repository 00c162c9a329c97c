// Package model holds the Go side of the GraphQL schema's scalars and
// the types that gqlgen binds the schema's objects to: job IDs, JSON
// values and durations, the job and event enums, and a job as the
// GraphQL face answers it. It translates only; every rule (defaults,
// limits, validation) is the engine's.
package model

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// MarshalJobID writes a job id as a GraphQL ID: a string of its decimal
// digits, as GraphQL IDs travel.
func MarshalJobID(id job.ID) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		io.WriteString(w, strconv.Quote(strconv.FormatInt(int64(id), 10))) //nolint:errcheck // the response buffer
	})
}

// UnmarshalJobID reads a GraphQL ID: a string of decimal digits, or an
// integer. A value that is not a positive job id is invalid input (the
// face names the argument in the error).
func UnmarshalJobID(v any) (job.ID, error) {
	var n int64
	var err error
	switch v := v.(type) {
	case string:
		n, err = strconv.ParseInt(v, 10, 64)
	case json.Number:
		n, err = v.Int64()
	case int64:
		n = v
	case int:
		n = int64(v)
	default:
		return 0, fmt.Errorf("a job id is a string of digits, not %T", v)
	}
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%v is not a job id: want a whole number of at least 1", v)
	}
	return job.ID(n), nil
}

// MarshalRawJSON writes stored JSON as it is: a JSON value, not a string.
// Empty means null.
func MarshalRawJSON(raw json.RawMessage) graphql.Marshaler {
	if len(raw) == 0 {
		return graphql.Null
	}
	return graphql.WriterFunc(func(w io.Writer) {
		w.Write(raw) //nolint:errcheck // the response buffer
	})
}

// UnmarshalRawJSON turns a JSON scalar, as gqlgen decoded it from the
// variables or from a literal in the document, back into JSON text for
// the engine, which normalizes it and applies its limits (as it does
// REST's). Numbers decoded from variables keep their exact text.
func UnmarshalRawJSON(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("not representable as JSON: %w", err)
	}
	return json.RawMessage(bytes.TrimRight(buf.Bytes(), "\n")), nil
}

// MarshalDuration writes a duration as REST does: "1.5s".
func MarshalDuration(d time.Duration) graphql.Marshaler {
	return graphql.MarshalString(d.String())
}

// UnmarshalDuration reads a duration string such as "1.5s", "250ms" or
// "2h45m".
func UnmarshalDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, fmt.Errorf("a duration is a string such as \"1.5s\", not %T", v)
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as \"1.5s\", \"250ms\" or \"2h\"", s)
	}
	return d, nil
}

// MarshalJobState writes a job state as its GraphQL enum value, the
// state's own lower-case name.
func MarshalJobState(s job.State) graphql.Marshaler {
	if s == "" {
		return graphql.Null
	}
	return graphql.MarshalString(string(s))
}

// UnmarshalJobState reads a JobState enum value.
func UnmarshalJobState(v any) (job.State, error) {
	s, ok := v.(string)
	if !ok || !job.State(s).Valid() {
		return "", fmt.Errorf("unknown state %v", v)
	}
	return job.State(s), nil
}

// MarshalEventType writes an event type as its GraphQL enum value.
func MarshalEventType(t engine.EventType) graphql.Marshaler {
	return graphql.MarshalString(string(t))
}

// UnmarshalEventType reads a JobEventType enum value. The schema takes
// none as input; it is here because gqlgen binds enums both ways.
func UnmarshalEventType(v any) (engine.EventType, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("unknown event type %v", v)
	}
	return engine.EventType(s), nil
}

// Job is a job as the GraphQL face answers it: the engine's job, and
// whether an enqueue found it already live (duplicate). Its Opt methods
// give null for what REST omits when empty.
type Job struct {
	*job.Job
	// Duplicate is set in an enqueue's answer when a unique job was
	// already live: this is that job and nothing was inserted.
	Duplicate bool
}

// NewJobs wraps jobs for the face.
func NewJobs(js []*job.Job) []*Job {
	out := make([]*Job, len(js))
	for i, j := range js {
		out[i] = &Job{Job: j}
	}
	return out
}

func optString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// OptUniqueKey is the unique key, or nil.
func (j *Job) OptUniqueKey() *string { return optString(j.UniqueKey) }

// OptCreatedBy is who enqueued the job, or nil.
func (j *Job) OptCreatedBy() *string { return optString(j.CreatedBy) }

// OptAttemptedBy is the worker that holds or last held the lease, or nil.
func (j *Job) OptAttemptedBy() *string { return optString(j.AttemptedBy) }

// OptLeaseToken is the live lease's token (only in lease answers), or nil.
func (j *Job) OptLeaseToken() *string { return optString(j.LeaseToken) }

// OptTimeout is the limit on one attempt, or nil for the worker's default.
func (j *Job) OptTimeout() *time.Duration {
	if j.Timeout <= 0 {
		return nil
	}
	return &j.Timeout
}

// AllTags is the job's tags, never nil.
func (j *Job) AllTags() []string {
	if j.Tags == nil {
		return []string{}
	}
	return j.Tags
}

// AllDependsOn is the jobs this one waits for, never nil.
func (j *Job) AllDependsOn() []job.ID {
	if j.DependsOn == nil {
		return []job.ID{}
	}
	return j.DependsOn
}

// ErrorHistory is the failure history, oldest first.
func (j *Job) ErrorHistory() []*AttemptError {
	out := make([]*AttemptError, len(j.Errors))
	for i := range j.Errors {
		out[i] = &AttemptError{AttemptError: j.Errors[i]}
	}
	return out
}

// AttemptError is one failed attempt, as the face answers it.
type AttemptError struct {
	job.AttemptError
}

// OptDetail is the attempt's detail, or nil.
func (e *AttemptError) OptDetail() *string { return optString(e.Detail) }

// JobEvent is one change of a job's state, as the face answers it.
type JobEvent struct {
	engine.Event
}

// OptJobID is the job's id, or nil for a promotion.
func (e *JobEvent) OptJobID() *job.ID {
	if e.JobID == 0 {
		return nil
	}
	return &e.JobID
}

// OptKind is the job's kind, or nil for a promotion.
func (e *JobEvent) OptKind() *string { return optString(e.Kind) }

// OptFrom is the state before the change, or nil where unknown.
func (e *JobEvent) OptFrom() *job.State {
	if e.From == "" {
		return nil
	}
	return &e.From
}

// OptTo is the state after the change, or nil for a deletion.
func (e *JobEvent) OptTo() *job.State {
	if e.To == "" {
		return nil
	}
	return &e.To
}
