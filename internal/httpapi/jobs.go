package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

type enqueueInput struct {
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"Makes the call safe to retry: the same key and body within 24 hours returns the first response and enqueues nothing; the same key with another body is refused with 422."`
	Body           EnqueueRequest
}

type jobOutput struct {
	Status int
	Body   Job
}

type batchInput struct {
	IdempotencyKey string `header:"Idempotency-Key" maxLength:"255" doc:"As for POST /v1/jobs."`
	Body           batchBody
}

type batchBody struct {
	Jobs []EnqueueRequest `json:"jobs" minItems:"1" maxItems:"10000"`
}

type jobsOutput struct {
	Status int
	Body   jobsBody
}

type jobsBody struct {
	Jobs []Job `json:"jobs"`
}

type idInput struct {
	ID int64 `path:"id" minimum:"1" doc:"The job's id."`
}

type listInput struct {
	State  []string `query:"state,explode" doc:"Only jobs in these states: repeat the parameter or comma-separate the values."`
	Kind   []string `query:"kind,explode" doc:"Only jobs of these kinds: repeat the parameter or comma-separate the values."`
	Queue  []string `query:"queue,explode" doc:"Only jobs in these queues: repeat the parameter or comma-separate the values."`
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

// splitAll flattens filter values given either as repeated parameters or
// comma-separated, dropping empty ones.
func splitAll(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// runEnqueue runs an enqueue, at most once per idempotency key when one is
// given. render makes the response (status and body) from the results; the
// body is stored with the key and decoded into out (on a repeat, from the
// first call's stored bytes). It returns the status to answer with.
func runEnqueue[T any](ctx context.Context, a *API, op, key string, request any, render func([]store.InsertResult) (int, T), out *T, specs ...job.Spec) (int, error) {
	who, authed := auth.PrincipalFrom(ctx)
	if authed {
		for i := range specs {
			specs[i].CreatedBy = who.Name()
		}
		// Each token has its own key space: another token's key is
		// another request, never its response.
		if key != "" {
			key = who.Name() + "/" + key
		}
	}
	if key == "" {
		res, err := a.eng.Enqueue(ctx, specs...)
		if err != nil {
			return 0, a.fail(ctx, op, err)
		}
		status, body := render(res)
		*out = body
		return status, nil
	}
	// The request's identity: its body as canonical JSON, so that key
	// order and white space do not make two equal requests differ.
	raw, err := json.Marshal(request)
	if err != nil {
		return 0, a.fail(ctx, op, err)
	}
	canon, err := job.CanonicalJSON(raw)
	if err != nil {
		return 0, a.fail(ctx, op, err)
	}
	sum := sha256.Sum256(append([]byte(op+"\x00"), canon...))
	res, err := a.eng.EnqueueIdempotent(ctx, key, hex.EncodeToString(sum[:]),
		func(res []store.InsertResult) (store.StoredResponse, error) {
			status, body := render(res)
			b, err := json.Marshal(body)
			return store.StoredResponse{Status: status, Body: b}, err
		}, specs...)
	if err != nil {
		return 0, a.fail(ctx, op, err)
	}
	if err := json.Unmarshal(res.Response.Body, out); err != nil {
		return 0, a.fail(ctx, op, fmt.Errorf("decode stored response: %w", err))
	}
	return res.Response.Status, nil
}

func (a *API) registerJobs() {
	tags := []string{"Jobs"}
	huma.Register(a.api, huma.Operation{
		OperationID: "enqueue", Method: http.MethodPost, Path: "/v1/jobs", Tags: tags,
		Summary:       "Enqueue a job",
		Description:   "Returns 201 with the new job, or 200 with the existing job and `duplicate: true` when a live job holds the unique key.",
		DefaultStatus: http.StatusCreated, MaxBodyBytes: a.bodyLimit(false),
		Errors: []int{400, 413, 415, 422, 503, 507},
	}, func(ctx context.Context, in *enqueueInput) (*jobOutput, error) {
		render := func(res []store.InsertResult) (int, Job) {
			out := toJob(res[0].Job)
			if res[0].Duplicate {
				out.Duplicate = true
				return http.StatusOK, out
			}
			return http.StatusCreated, out
		}
		out := &jobOutput{}
		status, err := runEnqueue(ctx, a, "enqueue", in.IdempotencyKey, in.Body, render, &out.Body, in.Body.spec())
		out.Status = status
		return out, err
	})

	// huma documents one success status; a duplicate answers 200 with the
	// same body.
	enqueue := a.api.OpenAPI().Paths["/v1/jobs"].Post
	dup := *enqueue.Responses["201"]
	dup.Description = "A live job already held the unique key: it is returned with `duplicate: true` and nothing was inserted."
	enqueue.Responses["200"] = &dup

	huma.Register(a.api, huma.Operation{
		OperationID: "enqueueBatch", Method: http.MethodPost, Path: "/v1/jobs/batch", Tags: tags,
		Summary:       "Enqueue many jobs, all or nothing",
		DefaultStatus: http.StatusCreated, MaxBodyBytes: a.bodyLimit(true),
		Errors: []int{400, 413, 415, 422, 503, 507},
	}, func(ctx context.Context, in *batchInput) (*jobsOutput, error) {
		specs := make([]job.Spec, len(in.Body.Jobs))
		for i := range in.Body.Jobs {
			specs[i] = in.Body.Jobs[i].spec()
		}
		render := func(res []store.InsertResult) (int, jobsBody) {
			var body jobsBody
			body.Jobs = make([]Job, len(res))
			for i, r := range res {
				body.Jobs[i] = toJob(r.Job)
				body.Jobs[i].Duplicate = r.Duplicate
			}
			return http.StatusCreated, body
		}
		out := &jobsOutput{}
		status, err := runEnqueue(ctx, a, "enqueueBatch", in.IdempotencyKey, in.Body, render, &out.Body, specs...)
		if err != nil && len(specs) == 1 {
			err = inFirstJob(err)
		}
		out.Status = status
		return out, err
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "listJobs", Method: http.MethodGet, Path: "/v1/jobs", Tags: tags,
		Summary: "List jobs", Errors: []int{400, 422},
	}, func(ctx context.Context, in *listInput) (*listOutput, error) {
		p := store.ListParams{Kinds: splitAll(in.Kind), Queues: splitAll(in.Queue), Tag: in.Tag, Limit: in.Limit, Desc: in.Order == "desc"}
		if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() {
			p.CreatedBy = who.Name() // producers read their own jobs
		}
		for _, s := range splitAll(in.State) {
			p.States = append(p.States, job.State(s))
		}
		if in.Cursor != "" {
			after, err := engine.DecodeCursor(in.Cursor, p.Desc)
			if err != nil {
				return nil, badQuery("cursor", "%v", err)
			}
			p.After = after
		}
		res, err := a.eng.List(ctx, p)
		if err != nil {
			return nil, inQuery(a.fail(ctx, "listJobs", err))
		}
		out := &listOutput{}
		out.Body.Jobs = toJobs(res.Jobs)
		if res.Next != 0 {
			out.Body.NextCursor = engine.EncodeCursor(res.Next, p.Desc)
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
		if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() && j.CreatedBy != who.Name() {
			// Not found, rather than forbidden: a producer learns nothing
			// about other producers' jobs, not even that they exist.
			return nil, a.fail(ctx, "getJob", fmt.Errorf("job %d: %w", in.ID, job.ErrNotFound))
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
