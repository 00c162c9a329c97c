package grpcapi

import (
	"context"

	"connectrpc.com/connect"

	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/job"
)

// queueService implements drover.v1.QueueService.
type queueService struct{ a *API }

var _ droverv1connect.QueueServiceHandler = (*queueService)(nil)

// ListQueues implements droverv1connect.QueueServiceHandler.
func (s *queueService) ListQueues(ctx context.Context, _ *connect.Request[droverv1.ListQueuesRequest]) (*connect.Response[droverv1.ListQueuesResponse], error) {
	qs, err := s.a.eng.Queues(ctx)
	if err != nil {
		return nil, err
	}
	out := &droverv1.ListQueuesResponse{Queues: make([]*droverv1.Queue, len(qs))}
	for i, q := range qs {
		out.Queues[i] = toQueue(q)
	}
	return connect.NewResponse(out), nil
}

// setPaused pauses or resumes a queue and returns it with its counts.
func (s *queueService) setPaused(ctx context.Context, name string, paused bool) (*droverv1.Queue, error) {
	if err := job.ValidateName(name); err != nil {
		return nil, &job.ValidationError{Field: "name", Message: err.Error()}
	}
	var err error
	if paused {
		err = s.a.eng.PauseQueue(ctx, name)
	} else {
		err = s.a.eng.ResumeQueue(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	qs, err := s.a.eng.Queues(ctx)
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Name == name {
			return toQueue(q), nil
		}
	}
	out := &droverv1.Queue{Name: name, Paused: paused, Counts: map[string]int64{}}
	for _, st := range job.States {
		out.Counts[string(st)] = 0
	}
	return out, nil
}

// PauseQueue implements droverv1connect.QueueServiceHandler.
func (s *queueService) PauseQueue(ctx context.Context, req *connect.Request[droverv1.PauseQueueRequest]) (*connect.Response[droverv1.PauseQueueResponse], error) {
	q, err := s.setPaused(ctx, req.Msg.GetName(), true)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.PauseQueueResponse{Queue: q}), nil
}

// ResumeQueue implements droverv1connect.QueueServiceHandler.
func (s *queueService) ResumeQueue(ctx context.Context, req *connect.Request[droverv1.ResumeQueueRequest]) (*connect.Response[droverv1.ResumeQueueResponse], error) {
	q, err := s.setPaused(ctx, req.Msg.GetName(), false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.ResumeQueueResponse{Queue: q}), nil
}
