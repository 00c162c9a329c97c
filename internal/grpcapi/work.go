package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/errcode"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/job"
)

// Bounds of the Work stream.
const (
	// workLeaseWait is how long one lease call of a Work stream waits
	// for jobs before it looks again (the engine caps it at its MaxWait).
	workLeaseWait = 30 * time.Second
	// maxWorkCredits caps the credits a worker may hold: more would let
	// one stream lease a whole queue.
	maxWorkCredits = 10_000
	// workInbox is how many worker messages wait, read but not yet
	// handled; past it the stream stops reading (HTTP/2 flow control
	// then holds the worker back).
	workInbox = 256
	// maxCompleteBatch bounds the completions settled in one store call.
	maxCompleteBatch = 1000
)

// Work implements droverv1connect.WorkerServiceHandler: one stream per
// worker process. The worker opens it with a WorkStart and grants
// credits; the server leases jobs for it (long polls of the engine, at
// most as many jobs as credits are left) and pushes them; the worker's
// heartbeats, completions, failures and snoozes each get a WorkAck with
// the message's correlation id. Completions that arrive together are
// settled in one store call, by a completer that runs beside the loop
// (one batch in the store while the next gathers), so their acks may
// come after the acks of messages sent after them; acks of completions
// keep their order.
//
// Leases are the engine's and fenced as everywhere: when the stream ends,
// jobs it had pushed stay leased to it until they are settled on another
// stream with their token (the lease token is the fence, not the stream)
// or until their lease expires and the rescuer re-delivers them. A job
// leased at the instant the stream broke may thus wait for its lease to
// expire; none is lost and none is settled twice.
func (s *workerService) Work(ctx context.Context, stream *connect.BidiStream[droverv1.WorkRequest, droverv1.WorkResponse]) error {
	first, err := stream.Receive()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	start := first.GetStart()
	if start == nil {
		return &job.ValidationError{Field: "start", Message: "the first message of a Work stream must be start"}
	}
	w := &worker{
		svc: s, stream: stream,
		lease: engine.LeaseRequest{
			Queues: start.GetQueues(), LeaseFor: duration(start.GetLeaseFor()),
			Worker: start.GetWorker(), Wait: workLeaseWait,
		},
		argsJSON: start.GetArgsJson(),
	}
	// The lease request is checked once, before anything runs, with a
	// lease call that takes no job.
	if err := w.checkStart(); err != nil {
		return err
	}
	// Headers go out at once: the worker knows the stream is open.
	if err := stream.Send(nil); err != nil {
		return err
	}
	return w.run(ctx)
}

// worker is the server side of one Work stream.
type worker struct {
	svc    *workerService
	stream *connect.BidiStream[droverv1.WorkRequest, droverv1.WorkResponse]
	lease  engine.LeaseRequest
	// argsJSON pushes args as JSON text (WorkStart.args_json).
	argsJSON bool
	// draining is set by a WorkDrain: nothing more is leased.
	draining bool
	// sendMu serializes Send: the loop and the completer both answer.
	sendMu sync.Mutex
	// batches carries completions to the completer, which settles them
	// while the loop goes on leasing and reading: one batch in the
	// store, one gathering behind it.
	batches chan []completion
}

// completion is one completion on its way to the completer: the message
// it came in, or one item of a WorkCompleteBatch (grouped), whose acks
// go out together in one WorkAcks.
type completion struct {
	id      uint64
	req     *droverv1.CompleteRequest
	grouped bool
}

func (w *worker) send(m *droverv1.WorkResponse) error {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	return w.stream.Send(m)
}

func (w *worker) checkStart() error {
	if len(w.lease.Queues) == 0 {
		return &job.ValidationError{Field: "start.queues", Message: "at least one queue is required"}
	}
	for i, q := range w.lease.Queues {
		if err := job.ValidateName(q); err != nil {
			return &job.ValidationError{Field: fmt.Sprintf("start.queues[%d]", i), Message: err.Error()}
		}
	}
	if d := w.lease.LeaseFor; d != 0 && (d < engine.MinLeaseFor || d > engine.MaxLeaseFor) {
		return &job.ValidationError{Field: "start.lease_for", Message: fmt.Sprintf("must be from %s to %s", engine.MinLeaseFor, engine.MaxLeaseFor)}
	}
	return nil
}

type leaseResult struct {
	jobs  []*job.Job
	err   error
	asked int // the lease's Max: credits it held while it ran
}

// leasesInFlight is how many lease calls one stream runs at once: while
// one commits, credits granted meanwhile start the next, so a worker
// that finishes jobs fast does not wait a whole commit for each refill.
const leasesInFlight = 2

// run is the stream's loop. A reader goroutine receives and a completer
// goroutine settles completions.
func (w *worker) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.batches = make(chan []completion, 1)
	compFailed := make(chan error, 1)
	compDone := make(chan struct{})
	go func() {
		defer close(compDone)
		w.completer(ctx, compFailed)
	}()
	// On the way out the completer settles and acks what it was given.
	defer func() { close(w.batches); <-compDone }()
	inbox := make(chan *droverv1.WorkRequest, workInbox)
	readErr := make(chan error, 1)
	go func() {
		defer close(inbox)
		for {
			msg, err := w.stream.Receive()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					readErr <- err
				}
				return
			}
			select {
			case inbox <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()

	// credits are the worker's unspent grants; reserved of them are
	// held by the leases in flight.
	credits, reserved, inFlight := 0, 0, 0
	leased := make(chan leaseResult, leasesInFlight)
	// Leases run under their own context, so that a worker closing its
	// side ends a lease's wait without ending the stream.
	lctx, stopLease := context.WithCancel(ctx)
	defer stopLease()
	// finishLeases stops the leases in flight and delivers what they
	// took.
	finishLeases := func() error {
		stopLease()
		for ; inFlight > 0; inFlight-- {
			res := <-leased
			reserved -= res.asked
			if err := w.deliver(res, &credits); err != nil && !errors.Is(err, context.Canceled) {
				return err
			}
		}
		return nil
	}
	for {
		for !w.draining && inFlight < leasesInFlight && credits-reserved > 0 {
			r := w.lease
			r.Max = min(credits-reserved, engine.MaxLeaseBatch)
			reserved += r.Max
			inFlight++
			go func() {
				jobs, err := w.svc.a.eng.Lease(lctx, r)
				leased <- leaseResult{jobs, err, r.Max}
			}()
		}
		select {
		case msg, ok := <-inbox:
			if !ok {
				// The worker closed its side: lease nothing more, but
				// deliver what the leases in flight took.
				if err := finishLeases(); err != nil && ctx.Err() == nil {
					return err
				}
				select {
				case err := <-readErr:
					return err
				default:
					return nil
				}
			}
			wasDraining := w.draining
			n, err := w.handle(ctx, msg, inbox)
			if err != nil {
				return err
			}
			credits = min(credits+n, maxWorkCredits)
			if w.draining && !wasDraining {
				// Deliver what the leases in flight took, then promise
				// the worker that nothing more comes.
				if err := finishLeases(); err != nil {
					return err
				}
				if err := w.send(&droverv1.WorkResponse{Message: &droverv1.WorkResponse_Drained{Drained: &droverv1.WorkDrained{}}}); err != nil {
					return err
				}
			}
			if w.draining {
				credits = 0
			}
		case res := <-leased:
			inFlight--
			reserved -= res.asked
			if err := w.deliver(res, &credits); err != nil {
				return err
			}
		case err := <-compFailed:
			return err
		case <-w.svc.a.eng.Stopping():
			// Lease calls answer at once from now on: end the stream, so
			// that the worker reconnects to a node that serves.
			return fmt.Errorf("the server is shutting down: %w", job.ErrUnavailable)
		case <-ctx.Done():
			return nil
		}
	}
}

// deliver pushes leased jobs to the worker, spending their credits.
func (w *worker) deliver(res leaseResult, credits *int) error {
	if res.err != nil {
		return res.err
	}
	if len(res.jobs) == 0 {
		return nil
	}
	*credits -= len(res.jobs)
	return w.send(&droverv1.WorkResponse{Message: &droverv1.WorkResponse_Jobs{Jobs: &droverv1.WorkJobs{Jobs: toJobsAs(res.jobs, w.argsJSON)}}})
}

// handle answers a worker message and returns the credits it granted.
// Completions that wait in the inbox behind it are settled with it, and a
// message of another kind found behind them is handled next.
func (w *worker) handle(ctx context.Context, msg *droverv1.WorkRequest, inbox chan *droverv1.WorkRequest) (credits int, err error) {
	for msg != nil {
		var n int
		n, msg, err = w.handleOne(ctx, msg, inbox)
		credits += n
		if err != nil {
			return credits, err
		}
	}
	return credits, nil
}

// handleOne answers one message; next is a message that a batch of
// completions read past and that must be handled now.
func (w *worker) handleOne(ctx context.Context, msg *droverv1.WorkRequest, inbox chan *droverv1.WorkRequest) (credits int, next *droverv1.WorkRequest, err error) {
	eng := w.svc.a.eng
	id := msg.GetCorrelationId()
	switch m := msg.GetMessage().(type) {
	case *droverv1.WorkRequest_Credit:
		n := int(m.Credit.GetCredits())
		if n < 0 {
			return 0, nil, &job.ValidationError{Field: "credit.credits", Message: "must not be negative"}
		}
		return n, nil, nil
	case *droverv1.WorkRequest_Start:
		return 0, nil, &job.ValidationError{Field: "start", Message: "a Work stream is started once"}
	case *droverv1.WorkRequest_Drain:
		w.draining = true
		return 0, nil, nil
	case *droverv1.WorkRequest_Heartbeat:
		hb := m.Heartbeat
		j, err := eng.Heartbeat(ctx, job.ID(hb.GetId()), hb.GetLeaseToken(), duration(hb.GetLeaseFor()))
		var out *droverv1.Job
		if err == nil {
			out = &droverv1.Job{Id: int64(j.ID), State: toState(j.State), Attempt: int32(j.Attempt), LeaseExpiresAt: timestamp(j.LeaseExpiresAt)} //nolint:gosec // G115: attempts are small
		}
		return 0, nil, w.ack(id, out, err)
	case *droverv1.WorkRequest_Complete, *droverv1.WorkRequest_CompleteBatch:
		next, err := w.complete(ctx, msg, inbox)
		return 0, next, err
	case *droverv1.WorkRequest_Fail:
		f := m.Fail
		in := engine.Failure{ID: job.ID(f.GetId()), LeaseToken: f.GetLeaseToken(), Message: f.GetError(), Detail: f.GetDetail(), Discard: f.GetDiscard(), Cancel: f.GetCancel()}
		if f.GetRetryIn() != nil {
			d := f.GetRetryIn().AsDuration()
			in.RetryIn = &d
		}
		j, err := eng.Fail(ctx, in)
		return 0, nil, w.ack(id, jobOrNil(j, err), err)
	case *droverv1.WorkRequest_Snooze:
		sn := m.Snooze
		j, err := eng.Snooze(ctx, job.ID(sn.GetId()), sn.GetLeaseToken(), duration(sn.GetDelay()))
		return 0, nil, w.ack(id, jobOrNil(j, err), err)
	default:
		return 0, nil, &job.ValidationError{Field: "message", Message: "empty or unknown message"}
	}
}

// complete hands msg's completions, together with the completions that
// wait right behind it in the inbox, to the completer as one batch. A
// message of another kind found behind them is handled after.
func (w *worker) complete(ctx context.Context, msg *droverv1.WorkRequest, inbox chan *droverv1.WorkRequest) (next *droverv1.WorkRequest, err error) {
	var batch []completion
	if err := addCompletions(&batch, msg); err != nil {
		return nil, err
	}
gather:
	for len(batch) < maxCompleteBatch {
		select {
		case m, ok := <-inbox:
			if !ok {
				break gather
			}
			if m.GetComplete() == nil && m.GetCompleteBatch() == nil {
				next = m
				break gather
			}
			if err := addCompletions(&batch, m); err != nil {
				return nil, err
			}
		default:
			break gather
		}
	}
	select {
	case w.batches <- batch:
		return next, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// addCompletions appends the completions of m, a complete or a
// complete_batch, to batch.
func addCompletions(batch *[]completion, m *droverv1.WorkRequest) error {
	if c := m.GetComplete(); c != nil {
		*batch = append(*batch, completion{id: m.GetCorrelationId(), req: c})
		return nil
	}
	cs := m.GetCompleteBatch().GetCompletions()
	if len(cs) == 0 || len(cs) > maxCompleteBatch {
		return &job.ValidationError{Field: "complete_batch.completions", Message: fmt.Sprintf("must hold 1 to %d completions", maxCompleteBatch)}
	}
	for i, c := range cs {
		*batch = append(*batch, completion{id: m.GetCorrelationId() + uint64(i), req: c, grouped: true})
	}
	return nil
}

// completer settles the batches of completions in order, each in one
// store call, and acks each completion. An error that ends the stream
// goes to failed; the batches after it are dropped unanswered (their
// jobs stay leased until settled again or rescued).
func (w *worker) completer(ctx context.Context, failed chan<- error) {
	for batch := range w.batches {
		if err := w.settleCompletions(ctx, batch); err != nil {
			failed <- err
			for range w.batches {
				// Dropped: the loop closes the channel on its way out.
			}
			return
		}
	}
}

func (w *worker) settleCompletions(ctx context.Context, batch []completion) error {
	acks := make([]*droverv1.WorkAck, len(batch))
	cs := make([]engine.Completion, 0, len(batch))
	idx := make([]int, 0, len(batch))
	for i, c := range batch {
		output, err := valueJSON(c.req.GetOutput(), "output")
		if err != nil {
			if acks[i], err = ackOf(c.id, nil, err); err != nil {
				return err
			}
			continue
		}
		cs = append(cs, engine.Completion{ID: job.ID(c.req.GetId()), LeaseToken: c.req.GetLeaseToken(), Output: output})
		idx = append(idx, i)
	}
	if len(cs) > 0 {
		// Not the stream's context alone: a worker that closes its
		// side right after its last completions still gets them
		// settled.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		res, err := w.svc.a.eng.CompleteMany(sctx, cs)
		if err != nil {
			return err
		}
		for k, r := range res {
			i := idx[k]
			if acks[i], err = ackOf(batch[i].id, completedJob(r.Job, r.Err), r.Err); err != nil {
				return err
			}
		}
	}
	// Acks of batched completions go out together, the others one by
	// one, in the batch's order.
	var grouped []*droverv1.WorkAck
	for i, c := range batch {
		if c.grouped {
			grouped = append(grouped, acks[i])
			continue
		}
		if err := w.send(&droverv1.WorkResponse{Message: &droverv1.WorkResponse_Ack{Ack: acks[i]}}); err != nil {
			return err
		}
	}
	if len(grouped) > 0 {
		return w.send(&droverv1.WorkResponse{Message: &droverv1.WorkResponse_Acks{Acks: &droverv1.WorkAcks{Acks: grouped}}})
	}
	return nil
}

// completedJob is what a completion's ack carries: the job's id, state,
// attempt and finalized_at. The worker has the rest, and sending the whole
// job (args, output, history) back for every completion would cost more
// than settling it.
func completedJob(j *job.Job, err error) *droverv1.Job {
	if err != nil || j == nil {
		return nil
	}
	return &droverv1.Job{
		Id: int64(j.ID), State: toState(j.State), Attempt: int32(j.Attempt), //nolint:gosec // G115: attempts are small
		FinalizedAt: timestamp(j.FinalizedAt),
	}
}

func jobOrNil(j *job.Job, err error) *droverv1.Job {
	if err != nil || j == nil {
		return nil
	}
	return toJob(j)
}

// ack answers one worker message: the job after the call, or why it was
// refused. Internal errors end the stream instead, logged in full.
func (w *worker) ack(id uint64, j *droverv1.Job, err error) error {
	a, err := ackOf(id, j, err)
	if err != nil {
		return err
	}
	return w.send(&droverv1.WorkResponse{Message: &droverv1.WorkResponse_Ack{Ack: a}})
}

// ackOf makes the ack of message id; an internal error is returned
// instead, to end the stream.
func ackOf(id uint64, j *droverv1.Job, err error) (*droverv1.WorkAck, error) {
	a := &droverv1.WorkAck{CorrelationId: id, Job: j}
	if err != nil {
		e := errcode.Of(err)
		if e.Code == errcode.Internal || e.Code == "unavailable" {
			return nil, err
		}
		a.Job = nil
		a.Error = &droverv1.WorkError{Code: e.Code, Message: err.Error()}
	}
	return a, nil
}
