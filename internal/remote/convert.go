package remote

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

	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/job"
)

// The conversions between the job package's types and the protobuf
// messages, the client's side of internal/grpcapi's. They translate only:
// the server decides every rule.

// enqueueRequest turns a spec into the wire request; prefix names the
// spec's fields in errors ("jobs[3]." in a batch).
func enqueueRequest(sp job.Spec, prefix string) (*droverv1.EnqueueRequest, error) {
	// Args go as JSON text: exact (no integer turned into a double) and
	// checked and normalized by the server as REST's are.
	r := &droverv1.EnqueueRequest{
		Kind: sp.Kind, Queue: sp.Queue, ArgsJson: sp.Args,
		Priority: int32(sp.Priority), MaxAttempts: int32(sp.MaxAttempts), //nolint:gosec // G115: the server checks the range
		Tags: sp.Tags,
	}
	if len(sp.Metadata) > 0 && string(sp.Metadata) != "null" {
		r.Metadata = &structpb.Struct{}
		if err := protojson.Unmarshal(sp.Metadata, r.Metadata); err != nil {
			return nil, &job.ValidationError{Field: prefix + "metadata", Message: "must be a JSON object: " + err.Error()}
		}
	}
	if !sp.RunAt.IsZero() {
		r.RunAt = timestamppb.New(sp.RunAt)
	}
	if sp.Delay != 0 {
		r.Delay = durationpb.New(sp.Delay)
	}
	if sp.Timeout != 0 {
		r.Timeout = durationpb.New(sp.Timeout)
	}
	if u := sp.Unique; u != nil {
		r.Unique = &droverv1.UniqueOptions{Key: u.Key, ByArgs: u.ByArgs}
		if u.Period != 0 {
			r.Unique.Period = durationpb.New(u.Period)
		}
	}
	for _, id := range sp.DependsOn {
		r.DependsOn = append(r.DependsOn, int64(id))
	}
	return r, nil
}

// fromJob turns a wire job into the job package's.
func fromJob(p *droverv1.Job) (*job.Job, error) {
	if p == nil {
		return nil, fmt.Errorf("remote: the server answered without a job")
	}
	j := &job.Job{
		ID: job.ID(p.GetId()), Kind: p.GetKind(), Queue: p.GetQueue(),
		Priority: int(p.GetPriority()), State: fromState(p.GetState()),
		Attempt: int(p.GetAttempt()), MaxAttempts: int(p.GetMaxAttempts()),
		UniqueKey: p.GetUniqueKey(), Tags: p.GetTags(),
		CreatedBy: p.GetCreatedBy(), AttemptedBy: p.GetAttemptedBy(),
		LeaseToken: p.GetLeaseToken(),
		CreatedAt:  p.GetCreatedAt().AsTime(), ScheduledAt: p.GetScheduledAt().AsTime(),
		AttemptedAt: optTime(p.GetAttemptedAt()), FinalizedAt: optTime(p.GetFinalizedAt()),
		LeaseExpiresAt: optTime(p.GetLeaseExpiresAt()),
	}
	var err error
	if raw := p.GetArgsJson(); len(raw) > 0 {
		j.Args = raw
	} else if j.Args, err = jsonOf(p.GetArgs()); err != nil {
		return nil, err
	}
	if len(j.Args) == 0 {
		j.Args = json.RawMessage("null")
	}
	if j.Output, err = jsonOf(p.GetOutput()); err != nil {
		return nil, err
	}
	if p.GetMetadata() != nil {
		if j.Metadata, err = jsonOf(p.GetMetadata()); err != nil {
			return nil, err
		}
	}
	if p.GetTimeout() != nil {
		j.Timeout = p.GetTimeout().AsDuration()
	}
	for _, id := range p.GetDependsOn() {
		j.DependsOn = append(j.DependsOn, job.ID(id))
	}
	for _, e := range p.GetErrors() {
		j.Errors = append(j.Errors, job.AttemptError{
			Attempt: int(e.GetAttempt()), At: e.GetAt().AsTime(), Message: e.GetMessage(), Detail: e.GetDetail(),
		})
	}
	return j, nil
}

// jsonOf encodes a protobuf JSON value as JSON text; absent is empty.
func jsonOf(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("remote: decode a job's JSON: %w", err)
	}
	return b, nil
}

func optTime(t *timestamppb.Timestamp) *time.Time {
	if t == nil {
		return nil
	}
	v := t.AsTime()
	return &v
}

// fromState turns the wire enum into a job state, by its name
// (JOB_STATE_RUNNING is "running").
func fromState(s droverv1.JobState) job.State {
	name, ok := droverv1.JobState_name[int32(s)]
	if !ok || s == droverv1.JobState_JOB_STATE_UNSPECIFIED {
		return ""
	}
	return job.State(strings.ToLower(strings.TrimPrefix(name, "JOB_STATE_")))
}
