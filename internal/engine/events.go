package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// EventType says what changed a job's state. The values are API: they
// name the events of the gRPC EventService and, later, of GraphQL
// subscriptions and the dashboard.
type EventType string

// The event types.
const (
	// EventInserted: the job was enqueued (To is its first state).
	EventInserted EventType = "inserted"
	// EventLeased: a worker leased the job (available → running).
	EventLeased EventType = "leased"
	// EventCompleted: its worker completed the job (running → completed).
	EventCompleted EventType = "completed"
	// EventFailed: its worker failed the attempt (running → retryable,
	// available, discarded or cancelled).
	EventFailed EventType = "failed"
	// EventSnoozed: its worker snoozed the job (running → scheduled or
	// available).
	EventSnoozed EventType = "snoozed"
	// EventCancelled: an operator cancelled the job.
	EventCancelled EventType = "cancelled"
	// EventRetried: an operator retried the job (→ available).
	EventRetried EventType = "retried"
	// EventDeleted: an operator deleted the job (To is empty).
	EventDeleted EventType = "deleted"
	// EventRescued: the job's lease expired and maintenance re-delivered
	// it (running → available, or discarded with no attempt left).
	EventRescued EventType = "rescued"
	// EventPromoted: maintenance made due scheduled and retryable jobs of
	// one queue available. The store reports only how many, so the event
	// has no job id and Count says how many jobs it stands for.
	EventPromoted EventType = "promoted"
)

// Event is one change of a job's state, as the engine made it.
type Event struct {
	Type  EventType
	JobID job.ID // zero for EventPromoted
	Kind  string // empty for EventPromoted
	Queue string
	// From is the state before the change, empty where the engine does
	// not know it (inserts, cancels, retries, promotions).
	From job.State
	// To is the state after the change, empty for EventDeleted.
	To      job.State
	Attempt int
	// At is the engine's time of the change.
	At time.Time
	// Count is how many jobs the event stands for: 1, or more for
	// EventPromoted.
	Count int
}

// EventFilter selects events. Empty fields match everything; several
// values in one field match any of them.
type EventFilter struct {
	Queues []string
	Kinds  []string
	// States match the state after the change (Event.To).
	States []job.State
}

func (f *EventFilter) match(ev *Event) bool {
	return (len(f.Queues) == 0 || slices.Contains(f.Queues, ev.Queue)) &&
		(len(f.Kinds) == 0 || slices.Contains(f.Kinds, ev.Kind)) &&
		(len(f.States) == 0 || slices.Contains(f.States, ev.To))
}

// Defaults of Config.EventBuffer and Config.MaxSubscribers.
const (
	DefaultEventBuffer    = 1024
	DefaultMaxSubscribers = 256
)

// SlowSubscriberError ends a subscription that fell behind: its buffer
// was full when another event came. It matches job.ErrOverloaded, so the
// faces answer it as they answer overload (gRPC RESOURCE_EXHAUSTED).
type SlowSubscriberError struct {
	// Behind is how many events the subscriber had not read when it was
	// dropped: its whole buffer and the event that did not fit.
	Behind int
}

// Error implements error.
func (e *SlowSubscriberError) Error() string {
	return fmt.Sprintf("subscriber too slow: %d events behind", e.Behind)
}

// Is reports whether target is job.ErrOverloaded.
func (e *SlowSubscriberError) Is(target error) bool { return target == job.ErrOverloaded }

// ErrSubscriptionClosed is what Next returns after the subscriber's own
// Close.
var ErrSubscriptionClosed = errors.New("subscription closed")

// errEventsStopped ends subscriptions when the engine stops serving
// (StopWaiting): a server shutting down must not wait for streams.
var errEventsStopped = fmt.Errorf("the server is shutting down: %w", job.ErrUnavailable)

// events is the engine's fan-out of job events to its subscribers.
//
// Publishing is on the hot path of every state change, so with nobody
// subscribed it costs one atomic load. The subscriber list is copied on
// write; publishers read it without locks. Each subscriber has a fixed
// buffer, and a publisher never waits for a subscriber: when the buffer is
// full, the subscriber is dropped with a SlowSubscriberError. So memory is
// bounded by MaxSubscribers × EventBuffer events, whatever the
// subscribers do.
type events struct {
	buffer int
	max    int

	subs atomic.Pointer[[]*Subscription] // nil or non-empty

	mu      sync.Mutex // serializes changes to subs
	stopped bool
}

func newEvents(buffer, maxSubs int) *events {
	if buffer <= 0 {
		buffer = DefaultEventBuffer
	}
	if maxSubs <= 0 {
		maxSubs = DefaultMaxSubscribers
	}
	return &events{buffer: buffer, max: maxSubs}
}

// active reports whether anyone subscribes, so that callers skip building
// events that nobody reads.
func (es *events) active() bool { return es.subs.Load() != nil }

// publish hands ev to every subscriber whose filter matches it.
func (es *events) publish(ev Event) {
	subs := es.subs.Load()
	if subs == nil {
		return
	}
	for _, s := range *subs {
		if !s.filter.match(&ev) {
			continue
		}
		select {
		case s.ch <- ev:
		default:
			s.end(&SlowSubscriberError{Behind: len(s.ch) + 1})
		}
	}
}

func (es *events) add(s *Subscription) error {
	es.mu.Lock()
	defer es.mu.Unlock()
	if es.stopped {
		return errEventsStopped
	}
	var cur []*Subscription
	if p := es.subs.Load(); p != nil {
		cur = *p
	}
	if len(cur) >= es.max {
		return fmt.Errorf("%d event subscribers already, the most this server takes: %w", len(cur), job.ErrOverloaded)
	}
	next := append(slices.Clip(cur), s)
	es.subs.Store(&next)
	return nil
}

func (es *events) remove(s *Subscription) {
	es.mu.Lock()
	defer es.mu.Unlock()
	p := es.subs.Load()
	if p == nil {
		return
	}
	i := slices.Index(*p, s)
	if i < 0 {
		return
	}
	next := slices.Delete(slices.Clone(*p), i, i+1)
	if len(next) == 0 {
		es.subs.Store(nil)
		return
	}
	es.subs.Store(&next)
}

// stop ends every subscription and refuses new ones.
func (es *events) stop() {
	es.mu.Lock()
	es.stopped = true
	p := es.subs.Load()
	es.mu.Unlock()
	if p != nil {
		for _, s := range *p {
			s.end(errEventsStopped)
		}
	}
}

// Subscription is one subscriber's view of the engine's job events, from
// the moment it subscribed. Read it with Next and end it with Close. Its
// methods are safe for concurrent use.
type Subscription struct {
	es     *events
	filter EventFilter
	ch     chan Event

	once sync.Once
	done chan struct{}
	err  error // set before done is closed
}

// Subscribe starts a subscription to the job events that match f, with a
// buffer of Config.EventBuffer events. A subscriber that lets its buffer
// fill is dropped: Next then returns a *SlowSubscriberError. Subscribing
// fails with an error matching job.ErrOverloaded when Config.MaxSubscribers
// subscriptions are open, job.ErrUnavailable once the engine stopped
// (StopWaiting), and a *job.ValidationError for a malformed filter.
//
// Events are those of changes made through this engine only: with
// several nodes on one PostgreSQL database, each node sees its own
// changes, not the other nodes'. Changes that a store makes on its own are
// not seen either: the release of a completed job's dependants, jobs
// enqueued in a caller's transaction (EnqueueVia) and jobs deleted by the
// pruner. An operation repeated with the same effect (an idempotent
// complete or fail, a cancel of a cancelled job) may publish its event
// again; read the job itself for the truth.
func (e *Engine) Subscribe(f EventFilter) (*Subscription, error) {
	for i, q := range f.Queues {
		if err := job.ValidateName(q); err != nil {
			return nil, &job.ValidationError{Field: fmt.Sprintf("queue[%d]", i), Message: err.Error()}
		}
	}
	for i, k := range f.Kinds {
		if err := job.ValidateName(k); err != nil {
			return nil, &job.ValidationError{Field: fmt.Sprintf("kind[%d]", i), Message: err.Error()}
		}
	}
	for i, st := range f.States {
		if !st.Valid() {
			return nil, &job.ValidationError{Field: fmt.Sprintf("state[%d]", i), Message: fmt.Sprintf("unknown state %q", st)}
		}
	}
	s := &Subscription{
		es: e.events,
		filter: EventFilter{
			Queues: slices.Clone(f.Queues), Kinds: slices.Clone(f.Kinds), States: slices.Clone(f.States),
		},
		ch:   make(chan Event, e.events.buffer),
		done: make(chan struct{}),
	}
	if err := e.events.add(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Next returns the next event, waiting for one until ctx ends. Once the
// subscription has ended it returns why, at once, even if events remain
// in its buffer: a *SlowSubscriberError when it fell behind,
// ErrSubscriptionClosed after Close, or an error matching
// job.ErrUnavailable when the engine stopped.
func (s *Subscription) Next(ctx context.Context) (Event, error) {
	select {
	case <-s.done:
		return Event{}, s.err
	default:
	}
	select {
	case ev := <-s.ch:
		return ev, nil
	case <-s.done:
		return Event{}, s.err
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// Done is closed when the subscription ends; Err then says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err returns why the subscription ended, or nil while it lives.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Close ends the subscription. It is safe to call more than once and
// after the subscription was dropped.
func (s *Subscription) Close() { s.end(ErrSubscriptionClosed) }

// end ends the subscription with err, once. The channel is never closed:
// a publisher holding an old copy of the list may still send to it, into
// a buffer that is then garbage.
func (s *Subscription) end(err error) {
	s.once.Do(func() {
		s.err = err
		close(s.done)
		s.es.remove(s)
	})
}

// publish is how the use cases report a state change.
func (e *Engine) publish(ev Event) {
	if ev.Count == 0 {
		ev.Count = 1
	}
	e.events.publish(ev)
}

// publishJobs reports the same change of many jobs.
func (e *Engine) publishJobs(typ EventType, from job.State, at time.Time, jobs []*job.Job) {
	if !e.events.active() {
		return
	}
	for _, j := range jobs {
		e.publish(Event{Type: typ, JobID: j.ID, Kind: j.Kind, Queue: j.Queue, From: from, To: j.State, Attempt: j.Attempt, At: at})
	}
}

// publishJob reports a change of one job.
func (e *Engine) publishJob(typ EventType, from job.State, at time.Time, j *job.Job) {
	if j == nil || !e.events.active() {
		return
	}
	e.publish(Event{Type: typ, JobID: j.ID, Kind: j.Kind, Queue: j.Queue, From: from, To: j.State, Attempt: j.Attempt, At: at})
}

// Subscribers returns how many event subscriptions are open now.
func (e *Engine) Subscribers() int {
	if p := e.events.subs.Load(); p != nil {
		return len(*p)
	}
	return 0
}
