package graphqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/graphqlapi/model"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// resolver is the root of the resolvers: each root field calls the
// engine as the REST and gRPC faces do, and converts.
type resolver struct{ a *API }

var _ ResolverRoot = (*resolver)(nil)

// Query implements ResolverRoot.
func (r *resolver) Query() QueryResolver { return queryResolver{r.a} }

// Mutation implements ResolverRoot.
func (r *resolver) Mutation() MutationResolver { return mutationResolver{r.a} }

// Subscription implements ResolverRoot.
func (r *resolver) Subscription() SubscriptionResolver {
	return subscriptionResolver{r.a}
}

type queryResolver struct{ a *API }

// Job implements QueryResolver.
func (q queryResolver) Job(ctx context.Context, id job.ID) (*model.Job, error) {
	j, err := q.a.eng.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	// A producer reads only its own jobs; another's is not found, as in
	// the other faces.
	if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() && j.CreatedBy != who.Name() {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	return &model.Job{Job: j}, nil
}

// Jobs implements QueryResolver.
func (q queryResolver) Jobs(ctx context.Context, states []job.State, kinds []string, queues []string, tag *string, first *int, after *string, order *ListOrder) (*JobConnection, error) {
	p := store.ListParams{States: states, Kinds: kinds, Queues: queues, Desc: order != nil && *order == ListOrderDesc}
	if tag != nil {
		p.Tag = *tag
	}
	if first != nil {
		if *first < 1 {
			return nil, &job.ValidationError{Field: "first", Message: fmt.Sprintf("must be from 1 to %d", store.MaxListLimit)}
		}
		p.Limit = *first
	}
	if who, ok := auth.PrincipalFrom(ctx); ok && who.ReadsOwnJobsOnly() {
		p.CreatedBy = who.Name()
	}
	if after != nil && *after != "" {
		id, err := engine.DecodeCursor(*after, p.Desc)
		if err != nil {
			return nil, &job.ValidationError{Field: "after", Message: err.Error()}
		}
		p.After = id
	}
	res, err := q.a.eng.List(ctx, p)
	if err != nil {
		var ve *job.ValidationError
		if errors.As(err, &ve) && ve.Field == "limit" {
			return nil, &job.ValidationError{Field: "first", Message: ve.Message}
		}
		return nil, err
	}
	out := &JobConnection{
		Edges:    make([]*JobEdge, len(res.Jobs)),
		Nodes:    model.NewJobs(res.Jobs),
		PageInfo: &PageInfo{HasNextPage: res.Next != 0},
	}
	for i, n := range out.Nodes {
		out.Edges[i] = &JobEdge{Cursor: engine.EncodeCursor(n.ID, p.Desc), Node: n}
	}
	if res.Next != 0 {
		c := engine.EncodeCursor(res.Next, p.Desc)
		out.PageInfo.EndCursor = &c
	}
	return out, nil
}

// Queues implements QueryResolver.
func (q queryResolver) Queues(ctx context.Context) ([]*Queue, error) {
	qs, err := q.a.eng.Queues(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*Queue, len(qs))
	for i, qi := range qs {
		out[i] = toQueue(qi)
	}
	return out, nil
}

// Stats implements QueryResolver.
func (q queryResolver) Stats(ctx context.Context) (*Stats, error) {
	qs, err := q.a.eng.Queues(ctx)
	if err != nil {
		return nil, err
	}
	all := map[job.State]int{}
	out := &Stats{Queues: len(qs), EventSubscribers: q.a.eng.Subscribers(), Now: q.a.eng.Now()}
	for _, qi := range qs {
		if qi.Paused {
			out.PausedQueues++
		}
		for st, n := range qi.Counts {
			all[st] += n
		}
	}
	out.Counts = counts(all)
	return out, nil
}

func counts(c map[job.State]int) *StateCounts {
	out := &StateCounts{
		Pending: c[job.StatePending], Scheduled: c[job.StateScheduled], Available: c[job.StateAvailable],
		Running: c[job.StateRunning], Retryable: c[job.StateRetryable], Completed: c[job.StateCompleted],
		Cancelled: c[job.StateCancelled], Discarded: c[job.StateDiscarded],
	}
	for _, st := range job.States {
		out.Total += c[st]
	}
	return out
}

func toQueue(q store.QueueInfo) *Queue {
	return &Queue{Name: q.Name, Paused: q.Paused, Counts: counts(q.Counts)}
}

type mutationResolver struct{ a *API }

// enqueue runs the engine's Enqueue with the caller recorded as the jobs'
// creator, as the other faces do.
func (m mutationResolver) enqueue(ctx context.Context, in []*EnqueueInput) ([]*model.Job, error) {
	specs := make([]job.Spec, len(in))
	who, authed := auth.PrincipalFrom(ctx)
	for i, e := range in {
		if e == nil {
			return nil, &job.ValidationError{Field: "input[" + strconv.Itoa(i) + "]", Message: "must not be null"}
		}
		specs[i] = spec(e)
		if authed {
			specs[i].CreatedBy = who.Name()
		}
	}
	res, err := m.a.eng.Enqueue(ctx, specs...)
	if err != nil {
		return nil, err
	}
	out := make([]*model.Job, len(res))
	for i, r := range res {
		out[i] = &model.Job{Job: r.Job, Duplicate: r.Duplicate}
	}
	return out, nil
}

// spec turns an enqueue input into the engine's spec. Every rule
// (defaults, limits) is the engine's.
func spec(in *EnqueueInput) job.Spec {
	sp := job.Spec{
		Kind: in.Kind, Args: in.Args, Queue: deref(in.Queue), Priority: deref(in.Priority),
		MaxAttempts: deref(in.MaxAttempts), Delay: deref(in.Delay), Timeout: deref(in.Timeout),
		Tags: in.Tags, Metadata: in.Metadata, DependsOn: in.DependsOn,
	}
	if in.RunAt != nil {
		sp.RunAt = *in.RunAt
	}
	if u := in.Unique; u != nil {
		sp.Unique = &job.UniqueOpts{Key: deref(u.Key), ByArgs: deref(u.ByArgs), Period: deref(u.Period)}
	}
	return sp
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// inInput renames the field of a validation error from the engine's
// name to its path in the operation's input argument: "priority" becomes
// "input.priority", and a batch's "jobs[3].kind" "input[3].kind", as
// gqlgen names the arguments it refuses itself.
func inInput(err error, batch bool) error {
	var ve *job.ValidationError
	if !errors.As(err, &ve) || ve.Field == "" {
		return err
	}
	out := *ve
	if rest, ok := strings.CutPrefix(ve.Field, "jobs"); batch && ok {
		out.Field = "input" + rest
	} else {
		out.Field = "input." + ve.Field
	}
	return &out
}

// Enqueue implements MutationResolver.
func (m mutationResolver) Enqueue(ctx context.Context, input EnqueueInput) (*model.Job, error) {
	out, err := m.enqueue(ctx, []*EnqueueInput{&input})
	if err != nil {
		return nil, inInput(err, false)
	}
	return out[0], nil
}

// EnqueueBatch implements MutationResolver.
func (m mutationResolver) EnqueueBatch(ctx context.Context, input []*EnqueueInput) ([]*model.Job, error) {
	if len(input) == 0 {
		return nil, &job.ValidationError{Field: "input", Message: "must hold at least one job"}
	}
	out, err := m.enqueue(ctx, input)
	if err != nil {
		return nil, inInput(err, true)
	}
	return out, nil
}

// CancelJob implements MutationResolver.
func (m mutationResolver) CancelJob(ctx context.Context, id job.ID) (*model.Job, error) {
	j, err := m.a.eng.Cancel(ctx, id)
	if err != nil {
		return nil, err
	}
	return &model.Job{Job: j}, nil
}

// RetryJob implements MutationResolver.
func (m mutationResolver) RetryJob(ctx context.Context, id job.ID) (*model.Job, error) {
	j, err := m.a.eng.Retry(ctx, id)
	if err != nil {
		return nil, err
	}
	return &model.Job{Job: j}, nil
}

// DeleteJob implements MutationResolver.
func (m mutationResolver) DeleteJob(ctx context.Context, id job.ID) (job.ID, error) {
	if err := m.a.eng.Delete(ctx, id); err != nil {
		return 0, err
	}
	return id, nil
}

// setPaused pauses or resumes a queue and returns it with its counts.
func (m mutationResolver) setPaused(ctx context.Context, name string, paused bool) (*Queue, error) {
	if err := job.ValidateName(name); err != nil {
		return nil, &job.ValidationError{Field: "name", Message: err.Error()}
	}
	var err error
	if paused {
		err = m.a.eng.PauseQueue(ctx, name)
	} else {
		err = m.a.eng.ResumeQueue(ctx, name)
	}
	if err != nil {
		return nil, err
	}
	qs, err := m.a.eng.Queues(ctx)
	if err != nil {
		return nil, err
	}
	for _, q := range qs {
		if q.Name == name {
			return toQueue(q), nil
		}
	}
	return &Queue{Name: name, Paused: paused, Counts: counts(nil)}, nil
}

// PauseQueue implements MutationResolver.
func (m mutationResolver) PauseQueue(ctx context.Context, name string) (*Queue, error) {
	return m.setPaused(ctx, name, true)
}

// ResumeQueue implements MutationResolver.
func (m mutationResolver) ResumeQueue(ctx context.Context, name string) (*Queue, error) {
	return m.setPaused(ctx, name, false)
}

// LeaseJobs implements MutationResolver.
func (m mutationResolver) LeaseJobs(ctx context.Context, in LeaseInput) ([]*model.Job, error) {
	jobs, err := m.a.eng.Lease(ctx, engine.LeaseRequest{
		Queues: in.Queues, Max: deref(in.Max), Wait: deref(in.Wait), LeaseFor: deref(in.LeaseFor), Worker: deref(in.Worker),
	})
	if err != nil {
		return nil, inInput(err, false)
	}
	return model.NewJobs(jobs), nil
}

// HeartbeatJob implements MutationResolver.
func (m mutationResolver) HeartbeatJob(ctx context.Context, id job.ID, leaseToken string, leaseFor *time.Duration) (*LeaseExpiry, error) {
	j, err := m.a.eng.Heartbeat(ctx, id, leaseToken, deref(leaseFor))
	if err != nil {
		return nil, err
	}
	return &LeaseExpiry{ID: j.ID, LeaseExpiresAt: j.LeaseExpiresAt}, nil
}

// CompleteJob implements MutationResolver.
func (m mutationResolver) CompleteJob(ctx context.Context, id job.ID, leaseToken string, output json.RawMessage) (*model.Job, error) {
	j, err := m.a.eng.Complete(ctx, id, leaseToken, output)
	if err != nil {
		return nil, err
	}
	return &model.Job{Job: j}, nil
}

// FailJob implements MutationResolver.
func (m mutationResolver) FailJob(ctx context.Context, in FailInput) (*model.Job, error) {
	j, err := m.a.eng.Fail(ctx, engine.Failure{
		ID: in.ID, LeaseToken: in.LeaseToken, Message: in.Error, Detail: deref(in.Detail),
		RetryIn: in.RetryIn, Discard: deref(in.Discard), Cancel: deref(in.Cancel),
	})
	if err != nil {
		return nil, inInput(err, false)
	}
	return &model.Job{Job: j}, nil
}

// SnoozeJob implements MutationResolver.
func (m mutationResolver) SnoozeJob(ctx context.Context, id job.ID, leaseToken string, delay time.Duration) (*model.Job, error) {
	j, err := m.a.eng.Snooze(ctx, id, leaseToken, delay)
	if err != nil {
		return nil, err
	}
	return &model.Job{Job: j}, nil
}

type subscriptionResolver struct{ a *API }

// JobEvents implements SubscriptionResolver: it streams the
// engine's job events (engine.Subscribe) until the client goes away, the
// server stops (unavailable) or the subscriber falls behind by more than
// its buffer (overloaded, "subscriber too slow: N events behind"); the
// error that ends the stream is its last message (endOfStream). The
// channel is unbuffered: events wait in the engine's bounded buffer,
// never here.
func (s subscriptionResolver) JobEvents(ctx context.Context, queues []string, kinds []string, states []job.State) (<-chan *model.JobEvent, error) {
	sub, err := s.a.eng.Subscribe(engine.EventFilter{Queues: queues, Kinds: kinds, States: states})
	if err != nil {
		return nil, err
	}
	end, _ := ctx.Value(streamEndKey{}).(*streamEnd)
	ch := make(chan *model.JobEvent)
	go func() {
		defer close(ch)
		defer sub.Close()
		for {
			ev, err := sub.Next(ctx)
			if err != nil {
				if ctx.Err() == nil && end != nil {
					end.set(err)
				}
				return
			}
			select {
			case ch <- &model.JobEvent{Event: ev}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
