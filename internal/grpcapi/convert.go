package grpcapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// The conversions between the engine's types and the protobuf messages.
// They translate only: every rule (defaults, limits, validation) is the
// engine's, as it is for REST.

// valueJSON turns a protobuf JSON value into JSON text for the engine,
// which normalizes it (job.NormalizeJSON: canonical form, and its limits
// on size and depth), as it does REST's. An absent value is empty (null
// for args). A value protojson cannot encode (a NaN or infinite number)
// is invalid input.
func valueJSON(v *structpb.Value, field string) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	return protoJSON(v, field)
}

// structJSON is valueJSON for an object.
func structJSON(s *structpb.Struct, field string) (json.RawMessage, error) {
	if s == nil {
		return nil, nil
	}
	return protoJSON(s, field)
}

func protoJSON(m proto.Message, field string) (json.RawMessage, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, &job.ValidationError{Field: field, Message: "not representable as JSON: " + err.Error()}
	}
	return b, nil
}

// toValue turns stored JSON into a protobuf value; numbers become
// doubles, which is where an integer beyond 2^53 loses precision.
func toValue(raw json.RawMessage) *structpb.Value {
	if len(raw) == 0 {
		return nil
	}
	v := &structpb.Value{}
	if err := protojson.Unmarshal(raw, v); err != nil {
		// Stored JSON is valid; a number out of double's range is the
		// one thing protojson refuses. Send it as its text.
		return structpb.NewStringValue(string(raw))
	}
	return v
}

// toStruct is toValue for an object; stored metadata is one or absent.
func toStruct(raw json.RawMessage) *structpb.Struct {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	s := &structpb.Struct{}
	if err := protojson.Unmarshal(raw, s); err != nil {
		return nil
	}
	return s
}

func timestamp(t *time.Time) *timestamppb.Timestamp {
	if t == nil || t.IsZero() {
		return nil
	}
	return timestamppb.New(*t)
}

func duration(d *durationpb.Duration) time.Duration {
	if d == nil {
		return 0
	}
	return d.AsDuration()
}

// states maps job states to the protobuf enum and back.
var states = map[job.State]droverv1.JobState{
	job.StatePending:   droverv1.JobState_JOB_STATE_PENDING,
	job.StateScheduled: droverv1.JobState_JOB_STATE_SCHEDULED,
	job.StateAvailable: droverv1.JobState_JOB_STATE_AVAILABLE,
	job.StateRunning:   droverv1.JobState_JOB_STATE_RUNNING,
	job.StateRetryable: droverv1.JobState_JOB_STATE_RETRYABLE,
	job.StateCompleted: droverv1.JobState_JOB_STATE_COMPLETED,
	job.StateCancelled: droverv1.JobState_JOB_STATE_CANCELLED,
	job.StateDiscarded: droverv1.JobState_JOB_STATE_DISCARDED,
}

func toState(s job.State) droverv1.JobState { return states[s] }

// fromStates turns filter values into job states. JOB_STATE_UNSPECIFIED
// is the same as absent; a number the enum does not name is invalid.
func fromStates(in []droverv1.JobState, field string) ([]job.State, error) {
	var out []job.State
	for i, s := range in {
		if s == droverv1.JobState_JOB_STATE_UNSPECIFIED {
			continue
		}
		name, ok := droverv1.JobState_name[int32(s)]
		if !ok {
			return nil, &job.ValidationError{Field: fmt.Sprintf("%s[%d]", field, i), Message: fmt.Sprintf("unknown state %d", s)}
		}
		out = append(out, job.State(strings.ToLower(strings.TrimPrefix(name, "JOB_STATE_"))))
	}
	return out, nil
}

func toJob(j *job.Job) *droverv1.Job {
	out := &droverv1.Job{
		Id: int64(j.ID), Kind: j.Kind, Queue: j.Queue, Args: toValue(j.Args),
		Priority: int32(j.Priority), State: toState(j.State), //nolint:gosec // G115: priorities are 1-9
		Attempt: int32(j.Attempt), MaxAttempts: int32(j.MaxAttempts), //nolint:gosec // G115: attempts are small
		UniqueKey: j.UniqueKey, Tags: j.Tags, Metadata: toStruct(j.Metadata), Output: toValue(j.Output),
		CreatedAt: timestamp(&j.CreatedAt), CreatedBy: j.CreatedBy, ScheduledAt: timestamp(&j.ScheduledAt),
		AttemptedAt: timestamp(j.AttemptedAt), FinalizedAt: timestamp(j.FinalizedAt), AttemptedBy: j.AttemptedBy,
		LeaseToken: j.LeaseToken, LeaseExpiresAt: timestamp(j.LeaseExpiresAt),
	}
	if out.Args == nil {
		out.Args = structpb.NewNullValue()
	}
	if j.Timeout > 0 {
		out.Timeout = durationpb.New(j.Timeout)
	}
	for _, id := range j.DependsOn {
		out.DependsOn = append(out.DependsOn, int64(id))
	}
	for _, e := range j.Errors {
		out.Errors = append(out.Errors, &droverv1.AttemptError{
			Attempt: int32(e.Attempt), At: timestamppb.New(e.At), Message: e.Message, Detail: e.Detail, //nolint:gosec // G115: attempts are small
		})
	}
	return out
}

func toJobs(js []*job.Job) []*droverv1.Job {
	out := make([]*droverv1.Job, len(js))
	for i, j := range js {
		out[i] = toJob(j)
	}
	return out
}

// toJobAs is toJob with, when argsJSON, the args as JSON text in
// args_json instead of a Value: for a Work stream that asked for it and
// for the answer to an enqueue that sent args_json. No Value is built on
// this side or taken apart on the other, and no integer is rounded.
func toJobAs(j *job.Job, argsJSON bool) *droverv1.Job {
	if !argsJSON {
		return toJob(j)
	}
	bare := *j // a copy without args
	bare.Args = nil
	out := toJob(&bare)
	out.Args = nil
	out.ArgsJson = j.Args
	if len(j.Args) == 0 {
		out.ArgsJson = []byte("null")
	}
	return out
}

func toJobsAs(js []*job.Job, argsJSON bool) []*droverv1.Job {
	out := make([]*droverv1.Job, len(js))
	for i, j := range js {
		out[i] = toJobAs(j, argsJSON)
	}
	return out
}

// spec turns an enqueue request into the engine's spec; prefix names the
// request's fields in errors ("jobs[3]." in a batch).
func spec(r *droverv1.EnqueueRequest, prefix string) (job.Spec, error) {
	args, err := valueJSON(r.GetArgs(), prefix+"args")
	if err != nil {
		return job.Spec{}, err
	}
	if raw := r.GetArgsJson(); len(raw) > 0 {
		if r.GetArgs() != nil {
			return job.Spec{}, &job.ValidationError{Field: prefix + "args_json", Message: "give args or args_json, not both"}
		}
		// The engine checks it is JSON and normalizes it, as for REST.
		args = raw
	}
	md, err := structJSON(r.GetMetadata(), prefix+"metadata")
	if err != nil {
		return job.Spec{}, err
	}
	sp := job.Spec{
		Kind: r.GetKind(), Queue: r.GetQueue(), Args: args, Priority: int(r.GetPriority()),
		MaxAttempts: int(r.GetMaxAttempts()), Tags: r.GetTags(), Metadata: md,
		Delay: duration(r.GetDelay()), Timeout: duration(r.GetTimeout()),
	}
	if r.GetRunAt() != nil {
		sp.RunAt = r.GetRunAt().AsTime()
	}
	if u := r.GetUnique(); u != nil {
		sp.Unique = &job.UniqueOpts{Key: u.GetKey(), ByArgs: u.GetByArgs(), Period: duration(u.GetPeriod())}
	}
	for _, id := range r.GetDependsOn() {
		sp.DependsOn = append(sp.DependsOn, job.ID(id))
	}
	return sp, nil
}

func toQueue(q store.QueueInfo) *droverv1.Queue {
	out := &droverv1.Queue{Name: q.Name, Paused: q.Paused, Counts: make(map[string]int64, len(job.States))}
	for _, st := range job.States {
		out.Counts[string(st)] = int64(q.Counts[st])
	}
	return out
}

// eventTypes maps the engine's event types to the protobuf enum.
var eventTypes = map[engine.EventType]droverv1.JobEventType{
	engine.EventInserted:  droverv1.JobEventType_JOB_EVENT_TYPE_INSERTED,
	engine.EventLeased:    droverv1.JobEventType_JOB_EVENT_TYPE_LEASED,
	engine.EventCompleted: droverv1.JobEventType_JOB_EVENT_TYPE_COMPLETED,
	engine.EventFailed:    droverv1.JobEventType_JOB_EVENT_TYPE_FAILED,
	engine.EventSnoozed:   droverv1.JobEventType_JOB_EVENT_TYPE_SNOOZED,
	engine.EventCancelled: droverv1.JobEventType_JOB_EVENT_TYPE_CANCELLED,
	engine.EventRetried:   droverv1.JobEventType_JOB_EVENT_TYPE_RETRIED,
	engine.EventDeleted:   droverv1.JobEventType_JOB_EVENT_TYPE_DELETED,
	engine.EventRescued:   droverv1.JobEventType_JOB_EVENT_TYPE_RESCUED,
	engine.EventPromoted:  droverv1.JobEventType_JOB_EVENT_TYPE_PROMOTED,
}

func toEvent(ev engine.Event) *droverv1.JobEvent {
	return &droverv1.JobEvent{
		Type: eventTypes[ev.Type], JobId: int64(ev.JobID), Kind: ev.Kind, Queue: ev.Queue,
		FromState: toState(ev.From), ToState: toState(ev.To),
		Attempt: int32(ev.Attempt), At: timestamppb.New(ev.At), Count: int32(ev.Count), //nolint:gosec // G115: small counts
	}
}

// checkID refuses ids that no job has, as REST's schema does (minimum 1).
func checkID(id int64) error {
	if id < 1 {
		return &job.ValidationError{Field: "id", Message: "must be at least 1"}
	}
	return nil
}
