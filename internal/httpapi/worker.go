package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

type leaseInput struct {
	Body struct {
		Queues   []string  `json:"queues" minItems:"1" maxItems:"100" doc:"Queues to take jobs from, in one fetch order."`
		Max      int       `json:"max,omitempty" minimum:"0" maximum:"1000" doc:"How many jobs at most; default 1."`
		Wait     *Duration `json:"wait,omitempty" doc:"How long to wait for a job when none is available (long poll); default 0, at most 60s."`
		LeaseFor *Duration `json:"lease_for,omitempty" doc:"Lease length; default 30s. Heartbeat before it ends."`
		Worker   string    `json:"worker,omitempty" maxLength:"256" doc:"The worker's name, shown to operators."`
	}
}

type leaseOutput struct {
	Body struct {
		Jobs []Job `json:"jobs"`
	}
}

type heartbeatInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		LeaseToken string    `json:"lease_token" minLength:"1" maxLength:"128"`
		LeaseFor   *Duration `json:"lease_for,omitempty" doc:"New lease length from now; default 30s."`
	}
}

type heartbeatOutput struct {
	Body struct {
		ID             int64     `json:"id"`
		LeaseExpiresAt time.Time `json:"lease_expires_at"`
	}
}

type completeInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		LeaseToken string          `json:"lease_token" minLength:"1" maxLength:"128"`
		Output     json.RawMessage `json:"output,omitempty" doc:"Any JSON the worker returns."`
	}
}

type failInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		LeaseToken string    `json:"lease_token" minLength:"1" maxLength:"128"`
		Error      string    `json:"error" maxLength:"65536" doc:"What went wrong; recorded in the job's history."`
		Detail     string    `json:"detail,omitempty" maxLength:"65536" doc:"More, such as a stack trace."`
		RetryIn    *Duration `json:"retry_in,omitempty" doc:"Retry after this long instead of the backoff."`
		Discard    bool      `json:"discard,omitempty" doc:"Dead-letter the job now, whatever attempts remain."`
		Cancel     bool      `json:"cancel,omitempty" doc:"Cancel the job now instead (it must not run again); give discard or cancel, not both."`
	}
}

type snoozeInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		LeaseToken string   `json:"lease_token" minLength:"1" maxLength:"128"`
		Delay      Duration `json:"delay" doc:"Run again after this long, without using an attempt."`
	}
}

func (a *API) registerWorker() {
	tags := []string{"Workers"}
	huma.Register(a.api, huma.Operation{
		OperationID: "lease", Method: http.MethodPost, Path: "/v1/lease", Tags: tags,
		Summary: "Lease jobs to work",
		Description: "Leases up to `max` available jobs of `queues` in fetch order (priority, scheduled_at, id). " +
			"When none is available it waits up to `wait`, answering as soon as a job arrives. " +
			"Each job carries a `lease_token`: heartbeat, complete, fail or snooze it with that token before `lease_expires_at`.",
		Errors: []int{400, 413, 415, 422},
	}, func(ctx context.Context, in *leaseInput) (*leaseOutput, error) {
		r := engine.LeaseRequest{Queues: in.Body.Queues, Max: in.Body.Max, Worker: in.Body.Worker}
		if in.Body.Wait != nil {
			r.Wait = time.Duration(*in.Body.Wait)
		}
		if in.Body.LeaseFor != nil {
			r.LeaseFor = time.Duration(*in.Body.LeaseFor)
		}
		jobs, err := a.eng.Lease(ctx, r)
		if err != nil {
			return nil, a.fail(ctx, "lease", err)
		}
		out := &leaseOutput{}
		out.Body.Jobs = toJobs(jobs)
		return out, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "heartbeat", Method: http.MethodPost, Path: "/v1/jobs/{id}/heartbeat", Tags: tags,
		Summary: "Extend a lease", Errors: []int{400, 404, 409, 413, 415, 422},
	}, func(ctx context.Context, in *heartbeatInput) (*heartbeatOutput, error) {
		var d time.Duration
		if in.Body.LeaseFor != nil {
			d = time.Duration(*in.Body.LeaseFor)
		}
		j, err := a.eng.Heartbeat(ctx, job.ID(in.ID), in.Body.LeaseToken, d)
		if err != nil {
			return nil, a.fail(ctx, "heartbeat", err)
		}
		out := &heartbeatOutput{}
		out.Body.ID = int64(j.ID)
		out.Body.LeaseExpiresAt = *j.LeaseExpiresAt
		return out, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "complete", Method: http.MethodPost, Path: "/v1/jobs/{id}/complete", Tags: tags,
		Summary:      "Complete a leased job",
		Description:  "Repeating a complete with the same token (its first response lost) returns the job unchanged. A stale token gets 409 and changes nothing.",
		Errors:       []int{400, 404, 409, 413, 415, 422},
		MaxBodyBytes: a.bodyLimit(false),
	}, func(ctx context.Context, in *completeInput) (*jobOutput, error) {
		j, err := a.eng.Complete(ctx, job.ID(in.ID), in.Body.LeaseToken, in.Body.Output)
		if err != nil {
			return nil, a.fail(ctx, "complete", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "fail", Method: http.MethodPost, Path: "/v1/jobs/{id}/fail", Tags: tags,
		Summary:     "Fail a leased job's attempt",
		Description: "The job is retried after its backoff (or `retry_in`) while attempts remain, else discarded.",
		Errors:      []int{400, 404, 409, 413, 415, 422},
	}, func(ctx context.Context, in *failInput) (*jobOutput, error) {
		f := engine.Failure{ID: job.ID(in.ID), LeaseToken: in.Body.LeaseToken, Message: in.Body.Error,
			Detail: in.Body.Detail, Discard: in.Body.Discard, Cancel: in.Body.Cancel}
		if in.Body.RetryIn != nil {
			d := time.Duration(*in.Body.RetryIn)
			f.RetryIn = &d
		}
		j, err := a.eng.Fail(ctx, f)
		if err != nil {
			return nil, a.fail(ctx, "fail", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})

	huma.Register(a.api, huma.Operation{
		OperationID: "snooze", Method: http.MethodPost, Path: "/v1/jobs/{id}/snooze", Tags: tags,
		Summary: "Run a leased job again later without using an attempt", Errors: []int{400, 404, 409, 413, 415, 422},
	}, func(ctx context.Context, in *snoozeInput) (*jobOutput, error) {
		j, err := a.eng.Snooze(ctx, job.ID(in.ID), in.Body.LeaseToken, time.Duration(in.Body.Delay))
		if err != nil {
			return nil, a.fail(ctx, "snooze", err)
		}
		return &jobOutput{Status: http.StatusOK, Body: toJob(j)}, nil
	})
}
