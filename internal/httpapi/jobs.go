package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

type enqueueInput struct {
	Body EnqueueRequest
}

type jobOutput struct {
	Status int
	Body   Job
}

type batchInput struct {
	Body struct {
		Jobs []EnqueueRequest `json:"jobs" minItems:"1" maxItems:"10000"`
	}
}

type jobsOutput struct {
	Status int
	Body   struct {
		Jobs []Job `json:"jobs"`
	}
}

type idInput struct {
	ID int64 `path:"id" minimum:"1" doc:"The job's id."`
}

type listInput struct {
	State  []string `query:"state" doc:"Only jobs in these states (comma-separated)."`
	Kind   []string `query:"kind" doc:"Only jobs of these kinds (comma-separated)."`
	Queue  []string `query:"queue" doc:"Only jobs in these queues (comma-separated)."`
	Tag    string   `query:"tag" doc:"Only jobs with this tag."`
	Limit  int      `query:"limit" minimum:"0" maximum:"1000" doc:"Page size; default 100."`
	Cursor string   `query:"cursor" doc:"next_cursor of the previous page."`
	Order  string   `query:"order" enum:"asc,desc" doc:"By id: asc (oldest first, default) or desc."`
}

type listOutput struct {
	Body struct {
		Jobs       []Job  `json:"jobs"`
		NextCursor string `json:"next_cursor,omitempty" doc:"Pass as cursor for the next page; absent on the last page."`
	}
}

type emptyOutput struct{}

func (a *API) registerJobs() {
	tags := []string{"Jobs"}
	huma.Register(a.api, huma.Operation{
		OperationID: "enqueue", Method: http.MethodPost, Path: "/v1/jobs", Tags: tags,
		Summary:       "Enqueue a job",
		Description:   "Returns 201 with the new job, or 200 with the existing job and `duplicate: true` when a live job holds the unique key.",
		DefaultStatus: http.StatusCreated, MaxBodyBytes: a.bodyLimit(false),
		Errors: []int{400, 413, 422, 503},
	}, func(ctx context.Context, in *enqueueInput) (*jobOutput, error) {
		res, err := a.eng.Enqueue(ctx, in.Body.spec())
		if err != nil {
			return nil, a.fail(ctx, "enqueue", err)
		}
		out := &jobOutput{Status: http.StatusCreated, Body: toJob(res[0].Job)}
		if res[0].Duplicate {
			out.Status = http.StatusOK
			out.Body.Duplicate = true
		}
		return out, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "enqueueBatch", Method: http.MethodPost, Path: "/v1/jobs/batch", Tags: tags,
		Summary:       "Enqueue many jobs, all or nothing",
		DefaultStatus: http.StatusCreated, MaxBodyBytes: a.bodyLimit(true),
		Errors: []int{400, 413, 422, 503},
	}, func(ctx context.Context, in *batchInput) (*jobsOutput, error) {
		specs := make([]job.Spec, len(in.Body.Jobs))
		for i := range in.Body.Jobs {
			specs[i] = in.Body.Jobs[i].spec()
		}
		res, err := a.eng.Enqueue(ctx, specs...)
		if err != nil {
			return nil, a.fail(ctx, "enqueueBatch", err)
		}
		out := &jobsOutput{Status: http.StatusCreated}
		out.Body.Jobs = make([]Job, len(res))
		for i, r := range res {
			out.Body.Jobs[i] = toJob(r.Job)
			out.Body.Jobs[i].Duplicate = r.Duplicate
		}
		return out, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "listJobs", Method: http.MethodGet, Path: "/v1/jobs", Tags: tags,
		Summary: "List jobs", Errors: []int{400, 422},
	}, func(ctx context.Context, in *listInput) (*listOutput, error) {
		p := store.ListParams{Kinds: in.Kind, Queues: in.Queue, Tag: in.Tag, Limit: in.Limit, Desc: in.Order == "desc"}
		for _, s := range in.State {
			p.States = append(p.States, job.State(strings.TrimSpace(s)))
		}
		if in.Cursor != "" {
			after, err := decodeCursor(in.Cursor, p.Desc)
			if err != nil {
				return nil, badRequest("cursor", "%v", err)
			}
			p.After = after
		}
		res, err := a.eng.List(ctx, p)
		if err != nil {
			return nil, a.fail(ctx, "listJobs", err)
		}
		out := &listOutput{}
		out.Body.Jobs = toJobs(res.Jobs)
		if res.Next != 0 {
			out.Body.NextCursor = encodeCursor(res.Next, p.Desc)
		}
		return out, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "getJob", Method: http.MethodGet, Path: "/v1/jobs/{id}", Tags: tags,
		Summary: "Get one job with its error history", Errors: []int{404},
	}, func(ctx context.Context, in *idInput) (*jobOutput, error) {
		j, err := a.eng.Get(ctx, job.ID(in.ID))
		if err != nil {
			return nil, a.fail(ctx, "getJob", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "cancelJob", Method: http.MethodPost, Path: "/v1/jobs/{id}/cancel", Tags: tags,
		Summary:     "Cancel a job that has not finished",
		Description: "Cancelling a running job revokes its lease: the worker's settle is refused with 409.",
		Errors:      []int{404, 409},
	}, func(ctx context.Context, in *idInput) (*jobOutput, error) {
		j, err := a.eng.Cancel(ctx, job.ID(in.ID))
		if err != nil {
			return nil, a.fail(ctx, "cancelJob", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "retryJob", Method: http.MethodPost, Path: "/v1/jobs/{id}/retry", Tags: tags,
		Summary: "Make a scheduled, retryable or finished job available now", Errors: []int{404, 409},
	}, func(ctx context.Context, in *idInput) (*jobOutput, error) {
		j, err := a.eng.Retry(ctx, job.ID(in.ID))
		if err != nil {
			return nil, a.fail(ctx, "retryJob", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "deleteJob", Method: http.MethodDelete, Path: "/v1/jobs/{id}", Tags: tags,
		Summary: "Delete a job that is not running", DefaultStatus: http.StatusNoContent,
		Errors: []int{404, 409},
	}, func(ctx context.Context, in *idInput) (*emptyOutput, error) {
		if err := a.eng.Delete(ctx, job.ID(in.ID)); err != nil {
			return nil, a.fail(ctx, "deleteJob", err)
		}
		return &emptyOutput{}, nil
	})
}
