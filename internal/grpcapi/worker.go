package grpcapi

import (
	"context"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/job"
)

// workerService implements drover.v1.WorkerService.
type workerService struct{ a *API }

var _ droverv1connect.WorkerServiceHandler = (*workerService)(nil)

// Lease implements droverv1connect.WorkerServiceHandler.
func (s *workerService) Lease(ctx context.Context, req *connect.Request[droverv1.LeaseRequest]) (*connect.Response[droverv1.LeaseResponse], error) {
	m := req.Msg
	jobs, err := s.a.eng.Lease(ctx, engine.LeaseRequest{
		Queues: m.GetQueues(), Max: int(m.GetMax()), Wait: duration(m.GetWait()),
		LeaseFor: duration(m.GetLeaseFor()), Worker: m.GetWorker(),
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.LeaseResponse{Jobs: toJobs(jobs)}), nil
}

// Heartbeat implements droverv1connect.WorkerServiceHandler.
func (s *workerService) Heartbeat(ctx context.Context, req *connect.Request[droverv1.HeartbeatRequest]) (*connect.Response[droverv1.HeartbeatResponse], error) {
	m := req.Msg
	if err := checkID(m.GetId()); err != nil {
		return nil, err
	}
	j, err := s.a.eng.Heartbeat(ctx, job.ID(m.GetId()), m.GetLeaseToken(), duration(m.GetLeaseFor()))
	if err != nil {
		return nil, err
	}
	out := &droverv1.HeartbeatResponse{Id: int64(j.ID)}
	if j.LeaseExpiresAt != nil {
		out.LeaseExpiresAt = timestamppb.New(*j.LeaseExpiresAt)
	}
	return connect.NewResponse(out), nil
}

// Complete implements droverv1connect.WorkerServiceHandler.
func (s *workerService) Complete(ctx context.Context, req *connect.Request[droverv1.CompleteRequest]) (*connect.Response[droverv1.CompleteResponse], error) {
	m := req.Msg
	if err := checkID(m.GetId()); err != nil {
		return nil, err
	}
	output, err := valueJSON(m.GetOutput(), "output")
	if err != nil {
		return nil, err
	}
	j, err := s.a.eng.Complete(ctx, job.ID(m.GetId()), m.GetLeaseToken(), output)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.CompleteResponse{Job: toJob(j)}), nil
}

// Fail implements droverv1connect.WorkerServiceHandler.
func (s *workerService) Fail(ctx context.Context, req *connect.Request[droverv1.FailRequest]) (*connect.Response[droverv1.FailResponse], error) {
	m := req.Msg
	if err := checkID(m.GetId()); err != nil {
		return nil, err
	}
	f := engine.Failure{ID: job.ID(m.GetId()), LeaseToken: m.GetLeaseToken(), Message: m.GetError(), Detail: m.GetDetail(), Discard: m.GetDiscard(), Cancel: m.GetCancel()}
	if m.GetRetryIn() != nil {
		d := m.GetRetryIn().AsDuration()
		f.RetryIn = &d
	}
	j, err := s.a.eng.Fail(ctx, f)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.FailResponse{Job: toJob(j)}), nil
}

// Snooze implements droverv1connect.WorkerServiceHandler.
func (s *workerService) Snooze(ctx context.Context, req *connect.Request[droverv1.SnoozeRequest]) (*connect.Response[droverv1.SnoozeResponse], error) {
	m := req.Msg
	if err := checkID(m.GetId()); err != nil {
		return nil, err
	}
	j, err := s.a.eng.Snooze(ctx, job.ID(m.GetId()), m.GetLeaseToken(), time.Duration(duration(m.GetDelay())))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.SnoozeResponse{Job: toJob(j)}), nil
}
