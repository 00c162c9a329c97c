package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/job"
)

// WorkOptions open a Work stream.
type WorkOptions struct {
	// Queues to take jobs from, in one fetch order.
	Queues []string
	// LeaseFor is the lease length of every pushed job; zero means the
	// server's default (30s).
	LeaseFor time.Duration
	// Worker names the process in leases.
	Worker string
	// OnJobs receives every batch of pushed jobs. It is called from the
	// stream's reader and must hand the jobs off and return: while it
	// runs, no acknowledgement is read.
	OnJobs func([]*job.Job)
	// GrantBatch is how many freed slots make a grant worth sending at
	// once; fewer wait up to grantDelay for company. Each grant lets the
	// server lease, and one lease of many jobs costs the store about what
	// one lease of one job does. Zero or one sends every grant at once.
	GrantBatch int
}

// grantDelay is the longest a freed slot waits for others before its
// grant is sent: the latency that batching grants may add to a job.
const grantDelay = 2 * time.Millisecond

// Session is one worker's Work stream that outlives broken connections:
// it reconnects with backoff, grants the new stream the credits that the
// old one had not spent, and sends again every message not yet
// acknowledged. That is safe because settling is fenced by lease tokens,
// not by streams: a completion sent twice is acknowledged twice with the
// same job, and a job pushed on the old stream is settled on the new one.
// A job the server leased for the old stream at the instant it broke
// waits for its lease to expire and is then re-delivered; none is lost.
type Session struct {
	conn   *Conn
	opts   WorkOptions
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
	nextID atomic.Uint64

	// sendMu serializes Send on the current stream; never held with mu.
	sendMu sync.Mutex

	mu       sync.Mutex
	stream   *connect.BidiStreamForClient[droverv1.WorkRequest, droverv1.WorkResponse]
	pending  map[uint64]*call
	owed     int // credits granted and not yet spent by a pushed job
	unsent   int // of owed, what the current stream has not been told
	draining bool
	drained  chan struct{}
	isDrain  bool // drained is closed
	closing  bool
}

type call struct {
	msg  *droverv1.WorkRequest
	done chan ackResult
}

type ackResult struct {
	job *droverv1.Job
	err error
}

// Work opens a session: it connects in the background and keeps
// connecting until Close. Grant credits to receive jobs.
func (c *Conn) Work(opts WorkOptions) (*Session, error) {
	if len(opts.Queues) == 0 {
		return nil, errors.New("remote: Work needs at least one queue")
	}
	if opts.OnJobs == nil {
		return nil, errors.New("remote: Work needs OnJobs")
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		conn: c, opts: opts, ctx: ctx, cancel: cancel,
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		pending: map[uint64]*call{}, drained: make(chan struct{}),
	}
	go s.run()
	go s.credits()
	return s, nil
}

// Grant gives the server room for n more jobs.
func (s *Session) Grant(n int) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	s.owed += n
	s.unsent += n
	s.mu.Unlock()
	s.wake()
}

func (s *Session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// credits sends granted credits, coalescing the grants that arrive while
// a send is under way, or within grantDelay of a small one, into one
// message.
func (s *Session) credits() {
	timer := time.NewTimer(0)
	<-timer.C
	for {
		select {
		case <-s.kick:
		case <-s.ctx.Done():
			return
		}
		s.mu.Lock()
		small := s.unsent < s.opts.GrantBatch && s.unsent < s.owed
		s.mu.Unlock()
		if small {
			// A few slots freed: wait a little for more.
			timer.Reset(grantDelay)
		wait:
			for {
				select {
				case <-s.kick:
					s.mu.Lock()
					enough := s.unsent >= s.opts.GrantBatch
					s.mu.Unlock()
					if enough {
						timer.Stop()
						break wait
					}
				case <-timer.C:
					break wait
				case <-s.ctx.Done():
					return
				}
			}
		}
		s.mu.Lock()
		n, st := s.unsent, s.stream
		if st == nil || s.draining {
			s.mu.Unlock()
			continue
		}
		s.unsent = 0
		s.mu.Unlock()
		if n > 0 {
			// A failed send is the stream breaking: the reconnect
			// grants every owed credit again.
			_ = s.send(st, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Credit{Credit: &droverv1.WorkCredit{Credits: int32(min(n, 1<<30))}}})
		}
	}
}

func (s *Session) send(st *connect.BidiStreamForClient[droverv1.WorkRequest, droverv1.WorkResponse], msgs ...*droverv1.WorkRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	for _, m := range msgs {
		if err := st.Send(m); err != nil {
			return err
		}
	}
	return nil
}

// Reconnect backoff bounds.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// run connects, serves the stream until it breaks, and connects again,
// until Close.
func (s *Session) run() {
	defer close(s.done)
	defer s.failPending()
	backoff := minBackoff
	for {
		if s.ctx.Err() != nil {
			return
		}
		st := s.conn.work.Work(s.ctx)
		start := &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Start{Start: &droverv1.WorkStart{
			Queues: s.opts.Queues, Worker: s.opts.Worker, ArgsJson: true,
		}}}
		if s.opts.LeaseFor > 0 {
			start.GetStart().LeaseFor = durationpb.New(s.opts.LeaseFor)
		}
		began := time.Now()
		err := s.send(st, start)
		if err == nil {
			err = s.serve(st)
		}
		_ = st.CloseResponse()
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing || s.ctx.Err() != nil {
			return
		}
		if time.Since(began) > 10*time.Second {
			backoff = minBackoff
		}
		s.conn.log.Warn("work stream broke; reconnecting", "queues", s.opts.Queues, "in", backoff, "err", fromError(err))
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// serve makes st the current stream, sends it what the session owes,
// and reads it until it ends.
func (s *Session) serve(st *connect.BidiStreamForClient[droverv1.WorkRequest, droverv1.WorkResponse]) error {
	s.mu.Lock()
	s.stream = st
	closing, draining := s.closing, s.draining
	if draining {
		s.unsent = 0
	} else {
		s.unsent = s.owed
	}
	ids := make([]uint64, 0, len(s.pending))
	for id := range s.pending {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	again := make([]*droverv1.WorkRequest, 0, len(ids)+1)
	if draining {
		again = append(again, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Drain{Drain: &droverv1.WorkDrain{}}})
	}
	for _, id := range ids {
		again = append(again, s.pending[id].msg)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.stream == st {
			s.stream = nil
		}
		s.mu.Unlock()
	}()
	if err := s.send(st, again...); err != nil {
		return err
	}
	if closing {
		// Close came while this stream was connecting.
		s.sendMu.Lock()
		_ = st.CloseRequest()
		s.sendMu.Unlock()
	}
	s.wake()
	for {
		resp, err := st.Receive()
		if err != nil {
			return err
		}
		switch m := resp.GetMessage().(type) {
		case *droverv1.WorkResponse_Jobs:
			s.deliver(m.Jobs.GetJobs())
		case *droverv1.WorkResponse_Ack:
			s.acked(m.Ack)
		case *droverv1.WorkResponse_Acks:
			for _, a := range m.Acks.GetAcks() {
				s.acked(a)
			}
		case *droverv1.WorkResponse_Drained:
			s.mu.Lock()
			if !s.isDrain {
				s.isDrain = true
				close(s.drained)
			}
			s.mu.Unlock()
		}
	}
}

func (s *Session) deliver(pjs []*droverv1.Job) {
	jobs := make([]*job.Job, 0, len(pjs))
	for _, pj := range pjs {
		j, err := fromJob(pj)
		if err != nil {
			// The job stays leased and is re-delivered when its lease
			// expires; a server that sends what it cannot encode is a
			// bug to see in the logs.
			s.conn.log.Error("work stream: undecodable job", "job_id", pj.GetId(), "err", err)
			continue
		}
		jobs = append(jobs, j)
	}
	s.mu.Lock()
	s.owed = max(s.owed-len(pjs), 0)
	s.mu.Unlock()
	if len(jobs) > 0 {
		s.opts.OnJobs(jobs)
	}
}

func (s *Session) acked(a *droverv1.WorkAck) {
	s.mu.Lock()
	c := s.pending[a.GetCorrelationId()]
	delete(s.pending, a.GetCorrelationId())
	s.mu.Unlock()
	if c == nil {
		return // sent twice across a reconnect; the first ack answered
	}
	r := ackResult{job: a.GetJob()}
	if e := a.GetError(); e != nil {
		r.err = codeError(e.GetCode(), e.GetMessage(), "")
	}
	c.done <- r
}

// failPending answers every call still waiting when the session ends.
func (s *Session) failPending() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.pending {
		c.done <- ackResult{err: fmt.Errorf("%w: the work session is closed", job.ErrUnavailable)}
		delete(s.pending, id)
	}
}

// calls sends msgs and waits for their acks. A message whose ack has
// not come when ctx ends is given up on (its result is unknown).
func (s *Session) calls(ctx context.Context, msgs []*droverv1.WorkRequest) []ackResult {
	return s.callsAs(ctx, msgs, nil)
}

// callsAs is calls that sends what wire makes of msgs, once they have
// their consecutive correlation ids, instead of msgs themselves (a
// reconnect sends msgs one by one again).
func (s *Session) callsAs(ctx context.Context, msgs []*droverv1.WorkRequest, wire func([]*droverv1.WorkRequest) []*droverv1.WorkRequest) []ackResult {
	cs := make([]*call, len(msgs))
	s.mu.Lock()
	closed := s.closing || s.ctx.Err() != nil
	if !closed {
		for i, m := range msgs {
			m.CorrelationId = s.nextID.Add(1)
			cs[i] = &call{msg: m, done: make(chan ackResult, 1)}
			s.pending[m.CorrelationId] = cs[i]
		}
	}
	st := s.stream
	s.mu.Unlock()
	out := make([]ackResult, len(msgs))
	if closed {
		for i := range out {
			out[i].err = fmt.Errorf("%w: the work session is closed", job.ErrUnavailable)
		}
		return out
	}
	if st != nil {
		out := msgs
		if wire != nil {
			out = wire(msgs)
		}
		// A failed send is the stream breaking: the reconnect sends
		// every pending message again.
		_ = s.send(st, out...)
	}
	for i, c := range cs {
		select {
		case out[i] = <-c.done:
		case <-ctx.Done():
			s.mu.Lock()
			for _, c := range cs[i:] {
				delete(s.pending, c.msg.GetCorrelationId())
			}
			s.mu.Unlock()
			for j := i; j < len(out); j++ {
				out[j].err = ctx.Err()
			}
			return out
		}
	}
	return out
}

func (s *Session) call(ctx context.Context, msg *droverv1.WorkRequest) (*droverv1.Job, error) {
	r := s.calls(ctx, []*droverv1.WorkRequest{msg})[0]
	return r.job, r.err
}

// Complete completes jobs; the result says, per completion, whether it
// was refused (a stale token: job.ErrLeaseLost) or is unknown (ctx ended
// first, or the session closed).
func (s *Session) Complete(ctx context.Context, cs []engine.Completion) []error {
	msgs := make([]*droverv1.WorkRequest, len(cs))
	errs := make([]error, len(cs))
	for i, c := range cs {
		m := &droverv1.CompleteRequest{Id: int64(c.ID), LeaseToken: c.LeaseToken}
		if len(c.Output) > 0 {
			m.Output = &structpb.Value{}
			if err := m.Output.UnmarshalJSON(c.Output); err != nil {
				errs[i] = &job.ValidationError{Field: "output", Message: "not valid JSON: " + err.Error()}
				m.Output = nil
			}
		}
		msgs[i] = &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Complete{Complete: m}}
	}
	for i, r := range s.callsAs(ctx, msgs, completeBatches) {
		if errs[i] == nil {
			errs[i] = r.err
		}
	}
	return errs
}

// completeBatches puts completions with consecutive correlation ids into
// WorkCompleteBatch messages of at most maxBatch: one message and one
// WorkAcks answer per batch instead of one each per job.
func completeBatches(msgs []*droverv1.WorkRequest) []*droverv1.WorkRequest {
	if len(msgs) < 2 {
		return msgs
	}
	var out []*droverv1.WorkRequest
	for len(msgs) > 0 {
		n := min(len(msgs), maxBatch)
		b := &droverv1.WorkCompleteBatch{Completions: make([]*droverv1.CompleteRequest, n)}
		for i, m := range msgs[:n] {
			b.Completions[i] = m.GetComplete()
		}
		out = append(out, &droverv1.WorkRequest{CorrelationId: msgs[0].GetCorrelationId(), Message: &droverv1.WorkRequest_CompleteBatch{CompleteBatch: b}})
		msgs = msgs[n:]
	}
	return out
}

// maxBatch is the server's limit on a WorkCompleteBatch.
const maxBatch = 1000

// Fail fails a job's attempt. f.Backoff cannot travel: give RetryIn.
func (s *Session) Fail(ctx context.Context, f engine.Failure) (*job.Job, error) {
	m := &droverv1.FailRequest{Id: int64(f.ID), LeaseToken: f.LeaseToken, Error: f.Message, Detail: f.Detail, Discard: f.Discard, Cancel: f.Cancel}
	if f.RetryIn != nil {
		m.RetryIn = durationpb.New(*f.RetryIn)
	}
	return s.jobCall(ctx, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Fail{Fail: m}})
}

// Snooze runs a leased job again after delay without using an attempt; a
// zero delay gives the lease back.
func (s *Session) Snooze(ctx context.Context, id job.ID, token string, delay time.Duration) (*job.Job, error) {
	return s.jobCall(ctx, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Snooze{Snooze: &droverv1.SnoozeRequest{
		Id: int64(id), LeaseToken: token, Delay: durationpb.New(delay),
	}}})
}

// Heartbeat extends a lease; the job returned carries only its id, state,
// attempt and new expiry.
func (s *Session) Heartbeat(ctx context.Context, id job.ID, token string, leaseFor time.Duration) (*job.Job, error) {
	m := &droverv1.HeartbeatRequest{Id: int64(id), LeaseToken: token}
	if leaseFor > 0 {
		m.LeaseFor = durationpb.New(leaseFor)
	}
	pj, err := s.call(ctx, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Heartbeat{Heartbeat: m}})
	if err != nil {
		return nil, err
	}
	return &job.Job{ID: job.ID(pj.GetId()), State: fromState(pj.GetState()), Attempt: int(pj.GetAttempt()), LeaseExpiresAt: optTime(pj.GetLeaseExpiresAt())}, nil
}

func (s *Session) jobCall(ctx context.Context, msg *droverv1.WorkRequest) (*job.Job, error) {
	pj, err := s.call(ctx, msg)
	if err != nil {
		return nil, err
	}
	return fromJob(pj)
}

// Drain asks the server to push nothing more and waits until it says so
// (or ctx ends). Settle what was pushed, then Close.
func (s *Session) Drain(ctx context.Context) error {
	s.mu.Lock()
	first := !s.draining
	s.draining = true
	st := s.stream
	s.mu.Unlock()
	if first && st != nil {
		_ = s.send(st, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Drain{Drain: &droverv1.WorkDrain{}}})
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close ends the session: it closes the stream's sending side, lets the
// server finish, and stops reconnecting. Calls still waiting fail with
// job.ErrUnavailable. Drain first, and settle, for a clean stop.
func (s *Session) Close(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	st := s.stream
	s.mu.Unlock()
	if st == nil {
		s.cancel() // between connections: nothing to finish
	} else {
		s.sendMu.Lock()
		_ = st.CloseRequest()
		s.sendMu.Unlock()
	}
	select {
	case <-s.done:
	case <-ctx.Done():
	}
	s.cancel()
	<-s.done
}
