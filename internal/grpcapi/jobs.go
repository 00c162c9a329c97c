package grpcapi

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// jobService implements drover.v1.JobService.
type jobService struct{ a *API }

var _ droverv1connect.JobServiceHandler = (*jobService)(nil)

// Enqueue implements droverv1connect.JobServiceHandler. With an
// idempotency-key (IdempotencyKeyHeader), it enqueues at most once per key.
func (s *jobService) Enqueue(ctx context.Context, req *connect.Request[droverv1.EnqueueRequest]) (*connect.Response[droverv1.EnqueueResponse], error) {
	sp, err := spec(req.Msg, "")
	if err != nil {
		return nil, err
	}
	out, err := s.enqueue(ctx, req, []job.Spec{sp}, func(res []store.InsertResult) proto.Message {
		j := toJobAs(res[0].Job, len(req.Msg.GetArgsJson()) > 0)
		j.Duplicate = res[0].Duplicate
		return &droverv1.EnqueueResponse{Job: j}
	}, &droverv1.EnqueueResponse{})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out.(*droverv1.EnqueueResponse)), nil //nolint:forcetypeassert // render and out are of this type
}

// EnqueueBatch implements droverv1connect.JobServiceHandler: all the jobs
// or none. With an idempotency-key (IdempotencyKeyHeader), it enqueues at
// most once per key.
func (s *jobService) EnqueueBatch(ctx context.Context, req *connect.Request[droverv1.EnqueueBatchRequest]) (*connect.Response[droverv1.EnqueueBatchResponse], error) {
	specs := make([]job.Spec, len(req.Msg.GetJobs()))
	for i, r := range req.Msg.GetJobs() {
		sp, err := spec(r, fmt.Sprintf("jobs[%d].", i))
		if err != nil {
			return nil, err
		}
		specs[i] = sp
	}
	out, err := s.enqueue(ctx, req, specs, func(res []store.InsertResult) proto.Message {
		out := &droverv1.EnqueueBatchResponse{Jobs: make([]*droverv1.Job, len(res))}
		for i, r := range res {
			out.Jobs[i] = toJobAs(r.Job, len(req.Msg.GetJobs()[i].GetArgsJson()) > 0)
			out.Jobs[i].Duplicate = r.Duplicate
		}
		return out
	}, &droverv1.EnqueueBatchResponse{})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(out.(*droverv1.EnqueueBatchResponse)), nil //nolint:forcetypeassert // render and out are of this type
}

// GetJob implements droverv1connect.JobServiceHandler.
func (s *jobService) GetJob(ctx context.Context, req *connect.Request[droverv1.GetJobRequest]) (*connect.Response[droverv1.GetJobResponse], error) {
	id := req.Msg.GetId()
	if err := checkID(id); err != nil {
		return nil, err
	}
	j, err := s.a.eng.Get(ctx, job.ID(id))
	if err != nil {
		return nil, err
	}
	if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() && j.CreatedBy != who.Name() {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	return connect.NewResponse(&droverv1.GetJobResponse{Job: toJob(j)}), nil
}

// ListJobs implements droverv1connect.JobServiceHandler.
func (s *jobService) ListJobs(ctx context.Context, req *connect.Request[droverv1.ListJobsRequest]) (*connect.Response[droverv1.ListJobsResponse], error) {
	m := req.Msg
	p := store.ListParams{Kinds: m.GetKind(), Queues: m.GetQueue(), Tag: m.GetTag(), Limit: int(m.GetLimit()), Desc: m.GetOrder() == droverv1.ListOrder_LIST_ORDER_DESC}
	if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() {
		p.CreatedBy = who.Name()
	}
	states, err := fromStates(m.GetState(), "state")
	if err != nil {
		return nil, err
	}
	p.States = states
	if m.GetCursor() != "" {
		after, err := engine.DecodeCursor(m.GetCursor(), p.Desc)
		if err != nil {
			return nil, &job.ValidationError{Field: "cursor", Message: err.Error()}
		}
		p.After = after
	}
	res, err := s.a.eng.List(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &droverv1.ListJobsResponse{Jobs: toJobs(res.Jobs)}
	if res.Next != 0 {
		out.NextCursor = engine.EncodeCursor(res.Next, p.Desc)
	}
	return connect.NewResponse(out), nil
}

// CancelJob implements droverv1connect.JobServiceHandler.
func (s *jobService) CancelJob(ctx context.Context, req *connect.Request[droverv1.CancelJobRequest]) (*connect.Response[droverv1.CancelJobResponse], error) {
	if err := checkID(req.Msg.GetId()); err != nil {
		return nil, err
	}
	j, err := s.a.eng.Cancel(ctx, job.ID(req.Msg.GetId()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.CancelJobResponse{Job: toJob(j)}), nil
}

// RetryJob implements droverv1connect.JobServiceHandler.
func (s *jobService) RetryJob(ctx context.Context, req *connect.Request[droverv1.RetryJobRequest]) (*connect.Response[droverv1.RetryJobResponse], error) {
	if err := checkID(req.Msg.GetId()); err != nil {
		return nil, err
	}
	j, err := s.a.eng.Retry(ctx, job.ID(req.Msg.GetId()))
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.RetryJobResponse{Job: toJob(j)}), nil
}

// DeleteJob implements droverv1connect.JobServiceHandler.
func (s *jobService) DeleteJob(ctx context.Context, req *connect.Request[droverv1.DeleteJobRequest]) (*connect.Response[droverv1.DeleteJobResponse], error) {
	if err := checkID(req.Msg.GetId()); err != nil {
		return nil, err
	}
	if err := s.a.eng.Delete(ctx, job.ID(req.Msg.GetId())); err != nil {
		return nil, err
	}
	return connect.NewResponse(&droverv1.DeleteJobResponse{}), nil
}
