package httpapi

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
)

type queuesOutput struct {
	Body struct {
		Queues []Queue `json:"queues"`
	}
}

type queueInput struct {
	Name string `path:"name" minLength:"1" maxLength:"128" pattern:"^[A-Za-z0-9_.:-]+$"`
}

type queueOutput struct {
	Body Queue
}

func (a *API) registerQueues() {
	tags := []string{"Queues"}
	huma.Register(a.api, huma.Operation{
		OperationID: "listQueues", Method: http.MethodGet, Path: "/v1/queues", Tags: tags,
		Summary: "List queues with their job counts per state",
	}, func(ctx context.Context, _ *struct{}) (*queuesOutput, error) {
		qs, err := a.eng.Queues(ctx)
		if err != nil {
			return nil, a.fail(ctx, "listQueues", err)
		}
		out := &queuesOutput{}
		out.Body.Queues = make([]Queue, len(qs))
		for i, q := range qs {
			out.Body.Queues[i] = toQueue(q)
		}
		return out, nil
	})
	for _, pause := range []bool{true, false} {
		id, verb, summary := "pauseQueue", "pause", "Pause a queue: no job is leased from it until it is resumed"
		if !pause {
			id, verb, summary = "resumeQueue", "resume", "Resume a paused queue"
		}
		huma.Register(a.api, huma.Operation{
			OperationID: id, Method: http.MethodPost, Path: "/v1/queues/{name}/" + verb, Tags: tags,
			Summary: summary, Errors: []int{422},
		}, func(ctx context.Context, in *queueInput) (*queueOutput, error) {
			var err error
			if pause {
				err = a.eng.PauseQueue(ctx, in.Name)
			} else {
				err = a.eng.ResumeQueue(ctx, in.Name)
			}
			if err != nil {
				return nil, a.fail(ctx, id, err)
			}
			qs, err := a.eng.Queues(ctx)
			if err != nil {
				return nil, a.fail(ctx, id, err)
			}
			out := &queueOutput{Body: Queue{Name: in.Name, Paused: pause, Counts: map[string]int{}}}
			for _, q := range qs {
				if q.Name == in.Name {
					out.Body = toQueue(q)
				}
			}
			return out, nil
		})
	}
}
