package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Defaults of Config.
const (
	DefaultLeaseFor     = 30 * time.Second
	MaxLeaseFor         = 24 * time.Hour
	MinLeaseFor         = time.Second
	DefaultMaxWait      = 60 * time.Second
	DefaultPollInterval = time.Second
	MaxLeaseBatch       = 1000
	MaxInsertBatch      = 10000
)

// Config configures an Engine.
type Config struct {
	// Store is where jobs live. Required.
	Store store.Store
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Limits bound job input.
	Limits job.Limits
	// DefaultLeaseFor is the lease length when a caller gives none.
	DefaultLeaseFor time.Duration
	// MaxWait caps how long a lease call may wait for jobs.
	MaxWait time.Duration
	// PollInterval is how often a waiting lease looks again on its own,
	// in case a wake-up was missed (for example from another node).
	PollInterval time.Duration
	// Backoff, when set, decides the wait before a job's next attempt
	// after a failure that gave no explicit retry time; nil means
	// job.DefaultBackoff. It may vary by kind.
	Backoff func(j *job.Job) time.Duration
	// Logger receives the engine's logs; nil means slog.Default().
	Logger *slog.Logger
	// EventBuffer is how many job events each subscriber may have unread
	// before it is dropped (see Subscribe); zero means
	// DefaultEventBuffer.
	EventBuffer int
	// MaxSubscribers caps the open event subscriptions; zero means
	// DefaultMaxSubscribers.
	MaxSubscribers int
}

// Engine runs the use cases over a store. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	store  store.Store
	notify *notifier
	events *events
	log    *slog.Logger

	stopWaitOnce sync.Once
	stopWait     chan struct{}
}

// New returns an Engine over cfg.Store.
func New(cfg Config) (*Engine, error) {
	if cfg.Store == nil {
		return nil, errors.New("engine: Config.Store is required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultLeaseFor <= 0 {
		cfg.DefaultLeaseFor = DefaultLeaseFor
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Engine{
		cfg: cfg, store: cfg.Store, notify: newNotifier(), events: newEvents(cfg.EventBuffer, cfg.MaxSubscribers),
		log: cfg.Logger, stopWait: make(chan struct{}),
	}
	if rn, ok := cfg.Store.(store.ReadyNotifier); ok {
		rn.SetReadyHook(e.Notify)
	}
	return e, nil
}

// Store returns the engine's store.
func (e *Engine) Store() store.Store { return e.store }

// Now returns the engine's current time, truncated to store precision.
func (e *Engine) Now() time.Time { return job.Truncate(e.cfg.Now()) }

// Enqueue validates specs and inserts them atomically: all or none. A spec
// whose unique key is held yields its existing job with Duplicate set.
// Validation errors are *job.ValidationError; with several specs their
// fields are prefixed "jobs[i].".
func (e *Engine) Enqueue(ctx context.Context, specs ...job.Spec) ([]store.InsertResult, error) {
	now := e.Now()
	ins, err := e.prepare(now, specs)
	if err != nil {
		return nil, err
	}
	res, err := e.store.Insert(ctx, store.InsertParams{Now: now, Jobs: ins})
	if err != nil {
		return nil, err
	}
	e.wakeInserted(res)
	e.publishInserted(now, res)
	return res, nil
}

// EnqueueVia is Enqueue through insert instead of the store's Insert: a
// store's transactional insert, whose jobs exist only once the caller's
// transaction commits. Nothing is woken here (the jobs are not visible
// yet); the store wakes workers when the transaction commits.
func (e *Engine) EnqueueVia(ctx context.Context, insert func(context.Context, store.InsertParams) ([]store.InsertResult, error), specs ...job.Spec) ([]store.InsertResult, error) {
	now := e.Now()
	ins, err := e.prepare(now, specs)
	if err != nil {
		return nil, err
	}
	return insert(ctx, store.InsertParams{Now: now, Jobs: ins})
}

// IdempotencyTTL is how long an idempotency key is remembered.
const IdempotencyTTL = 24 * time.Hour

// CheckIdempotencyKey checks an idempotency key as every face takes it:
// 1 to 255 characters of printable ASCII without spaces. Its error is a
// *job.ValidationError on the field Idempotency-Key.
func CheckIdempotencyKey(key string) error {
	if key == "" || len(key) > 255 {
		return &job.ValidationError{Field: "Idempotency-Key", Message: "must be 1 to 255 characters"}
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return &job.ValidationError{Field: "Idempotency-Key", Message: "only printable ASCII without spaces is allowed"}
		}
	}
	return nil
}

// EnqueueIdempotent is Enqueue at most once per key: the first call with
// key inserts specs and stores the response that render makes from the
// results; a repeat with the same key and requestHash within
// IdempotencyTTL inserts nothing and returns that response (Replayed). The
// same key with another requestHash fails with job.ErrIdempotencyMismatch.
func (e *Engine) EnqueueIdempotent(ctx context.Context, key, requestHash string, render func([]store.InsertResult) (store.StoredResponse, error), specs ...job.Spec) (*store.IdempotentInsertResult, error) {
	if err := CheckIdempotencyKey(key); err != nil {
		return nil, err
	}
	now := e.Now()
	ins, err := e.prepare(now, specs)
	if err != nil {
		return nil, err
	}
	res, err := e.store.InsertIdempotent(ctx, store.IdempotentInsertParams{
		InsertParams: store.InsertParams{Now: now, Jobs: ins},
		Key:          key, RequestHash: requestHash, Since: now.Add(-IdempotencyTTL), Render: render,
	})
	if err != nil {
		return nil, err
	}
	if !res.Replayed {
		e.wakeInserted(res.Results)
		e.publishInserted(now, res.Results)
	}
	return res, nil
}

// PruneIdempotencyKeys forgets idempotency keys older than IdempotencyTTL.
func (e *Engine) PruneIdempotencyKeys(ctx context.Context, limit int) (int, error) {
	limit = max(limit, 1)
	total := 0
	for {
		n, err := e.store.PruneIdempotencyKeys(ctx, e.Now().Add(-IdempotencyTTL), limit)
		total += n
		if err != nil || n < limit {
			return total, err
		}
	}
}

func (e *Engine) prepare(now time.Time, specs []job.Spec) ([]*job.Insert, error) {
	if len(specs) == 0 {
		return nil, &job.ValidationError{Field: "jobs", Message: "at least one job is required"}
	}
	if len(specs) > MaxInsertBatch {
		return nil, &job.ValidationError{Field: "jobs", Message: fmt.Sprintf("at most %d jobs per batch, got %d", MaxInsertBatch, len(specs)), TooLarge: true}
	}
	ins := make([]*job.Insert, len(specs))
	for i := range specs {
		prefix := ""
		if len(specs) > 1 {
			prefix = fmt.Sprintf("jobs[%d].", i)
		}
		in, err := specs[i].Prepare(now, e.cfg.Limits, prefix)
		if err != nil {
			return nil, err
		}
		ins[i] = in
	}
	return ins, nil
}

func (e *Engine) publishInserted(now time.Time, res []store.InsertResult) {
	if !e.events.active() {
		return
	}
	for _, r := range res {
		if !r.Duplicate {
			e.publishJob(EventInserted, "", now, r.Job)
		}
	}
}

func (e *Engine) wakeInserted(res []store.InsertResult) {
	if _, ok := e.store.(store.Parker); ok {
		// The insert's own transaction leased its jobs for the parked
		// calls, and a call that was not parked yet tries the store
		// first when it parks: a wake-up would only make a parked call
		// withdraw and try again for nothing.
		return
	}
	woke := map[string]int{}
	for _, r := range res {
		if !r.Duplicate && r.Job.State == job.StateAvailable {
			woke[r.Job.Queue]++
		}
	}
	e.wake(woke)
}

// Notify wakes lease calls waiting on queue as if count jobs had become
// available there (every waiter of queue when count < 0; every waiter of
// every queue when queue is ""). Stores that learn of jobs from other
// nodes call it.
func (e *Engine) Notify(queue string, count int) {
	if queue == "" {
		e.notify.notifyAll()
		return
	}
	e.notify.notify(queue, count)
}

func (e *Engine) wake(counts map[string]int) {
	for q, n := range counts {
		if n > 0 {
			e.notify.notify(q, n)
		}
	}
}

// LeaseRequest asks for jobs to work.
type LeaseRequest struct {
	Queues []string
	// Max is how many jobs to lease at most; zero means 1.
	Max int
	// Wait is how long to wait for a job when none is available (long
	// poll); zero returns at once. It is capped by Config.MaxWait.
	Wait time.Duration
	// LeaseFor is the lease length; zero means Config.DefaultLeaseFor.
	LeaseFor time.Duration
	// Worker names the caller, for operators.
	Worker string
}

// Lease leases up to r.Max available jobs of r.Queues in fetch order. When
// none is available it waits up to r.Wait, waking as soon as a job arrives
// in one of the queues. It returns an empty slice when the wait ends
// without jobs.
func (e *Engine) Lease(ctx context.Context, r LeaseRequest) ([]*job.Job, error) {
	if len(r.Queues) == 0 {
		return nil, &job.ValidationError{Field: "queues", Message: "at least one queue is required"}
	}
	for i, q := range r.Queues {
		if err := job.ValidateName(q); err != nil {
			return nil, &job.ValidationError{Field: fmt.Sprintf("queues[%d]", i), Message: err.Error()}
		}
	}
	if r.Max == 0 {
		r.Max = 1
	}
	if r.Max < 0 || r.Max > MaxLeaseBatch {
		return nil, &job.ValidationError{Field: "max", Message: fmt.Sprintf("must be from 1 to %d, got %d", MaxLeaseBatch, r.Max)}
	}
	if r.LeaseFor == 0 {
		r.LeaseFor = e.cfg.DefaultLeaseFor
	}
	if r.LeaseFor < MinLeaseFor || r.LeaseFor > MaxLeaseFor {
		return nil, &job.ValidationError{Field: "lease_for", Message: fmt.Sprintf("must be from %s to %s", MinLeaseFor, MaxLeaseFor)}
	}
	if r.Wait < 0 {
		return nil, &job.ValidationError{Field: "wait", Message: "must not be negative"}
	}
	wait := min(r.Wait, e.cfg.MaxWait)
	if len(r.Worker) > 256 {
		r.Worker = job.TruncateUTF8(r.Worker, 256)
	}
	p := store.LeaseParams{Queues: r.Queues, Limit: r.Max, LeaseFor: r.LeaseFor, Worker: r.Worker}
	if wait <= 0 {
		p.Now = e.Now()
		jobs, err := e.store.Lease(ctx, p)
		if err == nil && jobs == nil {
			jobs = []*job.Job{} // "no jobs", never null on the wire
		}
		e.publishJobs(EventLeased, job.StateAvailable, p.Now, jobs)
		return jobs, err
	}
	w := e.notify.register(r.Queues)
	defer e.notify.unregister(w)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(e.cfg.PollInterval)
	defer poll.Stop()
	if parker, ok := e.store.(store.Parker); ok {
		return e.leaseParked(ctx, parker, p, w, deadline.C, poll.C)
	}
	for {
		p.Now = e.Now()
		jobs, err := e.store.Lease(ctx, p)
		if err != nil || len(jobs) > 0 {
			e.publishJobs(EventLeased, job.StateAvailable, p.Now, jobs)
			return jobs, err
		}
		select {
		case <-w.ch:
		case <-poll.C:
		case <-deadline.C:
			return []*job.Job{}, nil
		case <-e.stopWait:
			return []*job.Job{}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// leaseParked is Lease's wait on a store that hands jobs off (the
// embedded store): the call parks in the store, and the write that makes a
// job available leases it for the call in its own transaction. Wake-ups
// from the notifier (a resumed queue, another node) and the poll tick make
// it withdraw and park again, which tries the store first.
func (e *Engine) leaseParked(ctx context.Context, parker store.Parker, p store.LeaseParams, w *waiter, deadline, poll <-chan time.Time) ([]*job.Job, error) {
	for {
		parked, err := parker.Park(ctx, p, e.Now)
		if err != nil {
			return nil, err
		}
		ended, cancelled := false, false
		select {
		case <-parked.Done():
		case <-w.ch:
		case <-poll:
		case <-deadline:
			ended = true
		case <-e.stopWait:
			ended = true
		case <-ctx.Done():
			ended, cancelled = true, true
		}
		// Jobs the store leased for this call are the caller's whatever
		// ended the wait; an error there (a failed group commit) is left
		// to the next Park to report.
		if got, perr := parked.Cancel(); perr == nil && len(got) > 0 {
			e.publishJobs(EventLeased, job.StateAvailable, e.Now(), got)
			return got, nil
		}
		if cancelled {
			return nil, ctx.Err()
		}
		if ended {
			return []*job.Job{}, nil
		}
	}
}

// Waiting returns how many lease calls are waiting for jobs now.
func (e *Engine) Waiting() int {
	e.notify.mu.Lock()
	defer e.notify.mu.Unlock()
	return e.notify.count
}

// StopWaiting ends every lease call that is waiting for jobs, now and
// from now on, with no jobs: a server calls it when it starts to shut down
// so that long polls do not hold the shutdown up. Calls that wait return
// at once afterwards. It is safe to call more than once.
//
// It also ends every event subscription (Next returns an error matching
// job.ErrUnavailable) and refuses new ones, so that event streams do not
// hold the shutdown up either.
func (e *Engine) StopWaiting() {
	e.stopWaitOnce.Do(func() {
		close(e.stopWait)
		e.events.stop()
	})
}

// Stopping returns a channel that is closed once StopWaiting was called:
// streams that lease in a loop (the gRPC Work stream) end on it.
func (e *Engine) Stopping() <-chan struct{} { return e.stopWait }

// Heartbeat extends the lease on job id held with token by leaseFor (zero
// means the default) and returns the job with its new expiry.
func (e *Engine) Heartbeat(ctx context.Context, id job.ID, token string, leaseFor time.Duration) (*job.Job, error) {
	if leaseFor == 0 {
		leaseFor = e.cfg.DefaultLeaseFor
	}
	if leaseFor < MinLeaseFor || leaseFor > MaxLeaseFor {
		return nil, &job.ValidationError{Field: "lease_for", Message: fmt.Sprintf("must be from %s to %s", MinLeaseFor, MaxLeaseFor)}
	}
	if err := checkToken(token); err != nil {
		return nil, err
	}
	return e.store.Heartbeat(ctx, store.HeartbeatParams{Now: e.Now(), ID: id, LeaseToken: token, LeaseFor: leaseFor})
}

func checkToken(token string) error {
	if token == "" {
		return &job.ValidationError{Field: "lease_token", Message: "is required"}
	}
	if len(token) > 128 {
		return &job.ValidationError{Field: "lease_token", Message: "at most 128 characters"}
	}
	return nil
}

// Completion is one job to complete.
type Completion struct {
	ID         job.ID
	LeaseToken string
	// Output is optional JSON returned by the worker.
	Output json.RawMessage
}

// Complete completes job id held with token, storing output (optional
// JSON), and returns the whole completed job. (CompleteMany, for batches,
// returns only the settled fields.)
func (e *Engine) Complete(ctx context.Context, id job.ID, token string, output json.RawMessage) (*job.Job, error) {
	res, err := e.CompleteMany(ctx, []Completion{{ID: id, LeaseToken: token, Output: output}})
	if err != nil {
		return nil, err
	}
	if res[0].Err != nil {
		return nil, res[0].Err
	}
	if !res[0].Job.CreatedAt.IsZero() {
		return res[0].Job, nil // the store returned the whole row
	}
	// The completion is durable; read the rest of the row.
	if full, err := e.store.Get(ctx, id); err == nil {
		return full, nil
	}
	return res[0].Job, nil
}

// CompleteMany completes several jobs in one store call and returns one
// result per job, in order. Invalid output fails only its own job.
func (e *Engine) CompleteMany(ctx context.Context, cs []Completion) ([]store.SettleResult, error) {
	out := make([]store.SettleResult, len(cs))
	p := store.CompleteParams{Now: e.Now(), Jobs: make([]store.CompleteJob, 0, len(cs))}
	idx := make([]int, 0, len(cs))
	for i, c := range cs {
		if err := checkToken(c.LeaseToken); err != nil {
			out[i].Err = err
			continue
		}
		var output json.RawMessage
		if len(c.Output) > 0 {
			o, err := job.NormalizeJSON(c.Output, e.maxArgs(), "output")
			if err != nil {
				out[i].Err = err
				continue
			}
			output = o
		}
		p.Jobs = append(p.Jobs, store.CompleteJob{ID: c.ID, LeaseToken: c.LeaseToken, Output: output})
		idx = append(idx, i)
	}
	if len(p.Jobs) == 0 {
		return out, nil
	}
	res, err := e.store.Complete(ctx, p)
	if err != nil {
		return nil, err
	}
	for k, r := range res {
		out[idx[k]] = r
	}
	if e.events.active() {
		for _, r := range res {
			if r.Err == nil {
				e.publishJob(EventCompleted, job.StateRunning, p.Now, r.Job)
			}
		}
	}
	return out, nil
}

func (e *Engine) maxArgs() int {
	if e.cfg.Limits.MaxArgsBytes > 0 {
		return e.cfg.Limits.MaxArgsBytes
	}
	return job.DefaultMaxArgsBytes
}

// Failure describes a failed attempt.
type Failure struct {
	ID         job.ID
	LeaseToken string
	Message    string
	Detail     string
	// RetryIn, when set, overrides the backoff (zero retries at once).
	RetryIn *time.Duration
	// Backoff, when set and RetryIn is not, decides the wait from the job.
	Backoff func(*job.Job) time.Duration
	// Discard dead-letters the job whatever attempts remain.
	Discard bool
	// Cancel cancels the job.
	Cancel bool
}

// Fail records a failed attempt and moves the job on: to retryable (or
// available) while attempts remain, else to discarded.
func (e *Engine) Fail(ctx context.Context, f Failure) (*job.Job, error) {
	if err := checkToken(f.LeaseToken); err != nil {
		return nil, err
	}
	if f.Message == "" {
		f.Message = "failed"
	}
	if f.Discard && f.Cancel {
		return nil, &job.ValidationError{Field: "discard", Message: "give discard or cancel, not both"}
	}
	now := e.Now()
	p := store.FailParams{
		Now: now, ID: f.ID, LeaseToken: f.LeaseToken, Message: f.Message, Detail: f.Detail,
		Discard: f.Discard, Cancel: f.Cancel, Backoff: f.Backoff,
	}
	if p.Backoff == nil {
		p.Backoff = e.cfg.Backoff
	}
	if f.RetryIn != nil {
		if *f.RetryIn < 0 {
			return nil, &job.ValidationError{Field: "retry_in", Message: "must not be negative"}
		}
		p.RetryAt = now.Add(*f.RetryIn)
	}
	j, err := e.store.Fail(ctx, p)
	if err != nil {
		return j, err
	}
	if j.State == job.StateAvailable {
		e.notify.notify(j.Queue, 1)
	}
	e.publishJob(EventFailed, job.StateRunning, now, j)
	return j, nil
}

// Snooze re-schedules a running job after delay without using an attempt.
func (e *Engine) Snooze(ctx context.Context, id job.ID, token string, delay time.Duration) (*job.Job, error) {
	if err := checkToken(token); err != nil {
		return nil, err
	}
	if delay < 0 {
		return nil, &job.ValidationError{Field: "delay", Message: "must not be negative"}
	}
	now := e.Now()
	j, err := e.store.Snooze(ctx, store.SnoozeParams{Now: now, ID: id, LeaseToken: token, Delay: delay})
	if err != nil {
		return j, err
	}
	if j.State == job.StateAvailable {
		e.notify.notify(j.Queue, 1)
	}
	e.publishJob(EventSnoozed, job.StateRunning, now, j)
	return j, nil
}

// Cancel cancels a job that is not final.
func (e *Engine) Cancel(ctx context.Context, id job.ID) (*job.Job, error) {
	now := e.Now()
	j, err := e.store.Cancel(ctx, store.CancelParams{Now: now, ID: id})
	if err != nil {
		return j, err
	}
	e.publishJob(EventCancelled, "", now, j)
	return j, nil
}

// Retry makes a scheduled, retryable or final job available now.
func (e *Engine) Retry(ctx context.Context, id job.ID) (*job.Job, error) {
	now := e.Now()
	j, err := e.store.Retry(ctx, store.RetryParams{Now: now, ID: id})
	if err != nil {
		return j, err
	}
	if j.State == job.StateAvailable {
		e.notify.notify(j.Queue, 1)
	}
	e.publishJob(EventRetried, "", now, j)
	return j, nil
}

// Delete deletes a job that is not running.
func (e *Engine) Delete(ctx context.Context, id job.ID) error {
	// The store's Delete says nothing of the job; read it first, only for
	// subscribers (a change in between leaves the event's From stale).
	var before *job.Job
	if e.events.active() {
		before, _ = e.store.Get(ctx, id)
	}
	if err := e.store.Delete(ctx, store.DeleteParams{ID: id}); err != nil {
		return err
	}
	ev := Event{Type: EventDeleted, JobID: id, At: e.Now()}
	if before != nil {
		ev.Kind, ev.Queue, ev.From, ev.Attempt = before.Kind, before.Queue, before.State, before.Attempt
	}
	e.publish(ev)
	return nil
}

// Get returns one job with its error history.
func (e *Engine) Get(ctx context.Context, id job.ID) (*job.Job, error) {
	return e.store.Get(ctx, id)
}

// List returns one page of jobs.
func (e *Engine) List(ctx context.Context, p store.ListParams) (*store.ListResult, error) {
	for _, st := range p.States {
		if !st.Valid() {
			return nil, &job.ValidationError{Field: "state", Message: fmt.Sprintf("unknown state %q", st)}
		}
	}
	if p.Limit < 0 || p.Limit > store.MaxListLimit {
		return nil, &job.ValidationError{Field: "limit", Message: fmt.Sprintf("must be from 1 to %d", store.MaxListLimit)}
	}
	if p.Limit == 0 {
		p.Limit = 100
	}
	return e.store.List(ctx, p)
}

// Queues returns every queue with its counts and paused flag.
func (e *Engine) Queues(ctx context.Context) ([]store.QueueInfo, error) {
	return e.store.Queues(ctx)
}

// PauseQueue stops leases from queue until it is resumed.
func (e *Engine) PauseQueue(ctx context.Context, queue string) error {
	return e.store.SetQueuePaused(ctx, store.QueuePauseParams{Now: e.Now(), Queue: queue, Paused: true})
}

// ResumeQueue lets leases take jobs from queue again.
func (e *Engine) ResumeQueue(ctx context.Context, queue string) error {
	err := e.store.SetQueuePaused(ctx, store.QueuePauseParams{Now: e.Now(), Queue: queue, Paused: false})
	if err == nil {
		e.notify.notify(queue, -1)
	}
	return err
}

// Promote makes due scheduled and retryable jobs available, in batches of
// limit, and wakes waiting leases. It returns how many it promoted.
func (e *Engine) Promote(ctx context.Context, limit int) (int, error) {
	limit = max(limit, 1)
	total := 0
	for {
		now := e.Now()
		counts, err := e.store.Promote(ctx, store.PromoteParams{Now: now, Limit: limit})
		if err != nil {
			return total, err
		}
		n := 0
		for q, c := range counts {
			n += c
			if c > 0 {
				e.publish(Event{Type: EventPromoted, Queue: q, To: job.StateAvailable, At: now, Count: c})
			}
		}
		e.wake(counts)
		total += n
		if n < limit {
			return total, nil
		}
	}
}

// Rescue re-delivers jobs whose lease expired, in batches of limit, and
// returns how many it rescued.
func (e *Engine) Rescue(ctx context.Context, limit int) (int, error) {
	limit = max(limit, 1)
	total := 0
	for {
		now := e.Now()
		jobs, err := e.store.Rescue(ctx, store.RescueParams{Now: now, Limit: limit})
		if err != nil {
			return total, err
		}
		e.publishJobs(EventRescued, job.StateRunning, now, jobs)
		woke := map[string]int{}
		for _, j := range jobs {
			if j.State == job.StateAvailable {
				woke[j.Queue]++
			}
			e.log.Warn("lease expired; job re-delivered", "job_id", j.ID, "kind", j.Kind, "queue", j.Queue, "attempt", j.Attempt, "state", j.State)
		}
		e.wake(woke)
		total += len(jobs)
		if len(jobs) < limit {
			return total, nil
		}
	}
}

// Prune deletes jobs in the given final states finalized before before,
// in batches of limit, and returns how many it deleted.
func (e *Engine) Prune(ctx context.Context, before time.Time, states []job.State, limit int) (int, error) {
	limit = max(limit, 1)
	total := 0
	for {
		n, err := e.store.Prune(ctx, store.PruneParams{Before: before, States: states, Limit: limit})
		total += n
		if err != nil || n < limit {
			return total, err
		}
	}
}
