package drover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/maintenance"
	"github.com/droverhq/drover/internal/remote"
	"github.com/droverhq/drover/internal/store"
)

// Defaults of Config.
const (
	DefaultJobTimeout = time.Minute
	DefaultLeaseFor   = 30 * time.Second
	DefaultMaxWorkers = 100
)

// Config configures a Client. A client with no Queues only inserts.
type Config struct {
	// Queues to work, each with its own concurrency.
	Queues map[string]QueueConfig
	// Workers by kind; required when Queues is set.
	Workers *Workers
	// JobTimeout limits an attempt when neither the job nor its worker
	// says otherwise; zero means one minute, negative means no limit.
	JobTimeout time.Duration
	// LeaseFor is the lease length; heartbeats renew it while work runs,
	// and a crashed worker's jobs are re-delivered about this long after
	// its last heartbeat. Zero means 30 seconds.
	LeaseFor time.Duration
	// ID names this client in leases, for operators; zero means
	// host-pid.
	ID string
	// NoMaintenance stops the client from running the background services
	// (promote due jobs, rescue expired leases, prune). Leave it false
	// unless a server or another client on the same store runs them.
	NoMaintenance bool
	// Retention of finished jobs for the pruner; zero fields take the
	// defaults (completed: a day; cancelled and discarded: a week) and
	// negative ones keep those jobs forever.
	Retention Retention
	// Logger receives the client's logs; nil means slog.Default().
	Logger *slog.Logger
}

// QueueConfig configures one worked queue.
type QueueConfig struct {
	// MaxWorkers is how many jobs of the queue run at once; zero means 100.
	MaxWorkers int
}

// Retention says how long finished jobs are kept before pruning. A zero
// field takes the default; a negative one keeps those jobs forever.
type Retention struct {
	Completed time.Duration
	Cancelled time.Duration
	Discarded time.Duration
}

// Client inserts jobs and, when configured with queues, works them. It is
// safe for concurrent use.
type Client struct {
	st *Store
	// api serves inserts and job calls: the engine in this process, or
	// the remote server (see OpenRemote).
	api jobsAPI
	// eng is the engine on a local store; nil on a remote one.
	eng *engine.Engine
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	state     int // 0 new, 1 started, 2 stopped
	fetchCtx  context.Context
	stopFetch context.CancelFunc
	workCtx   context.Context
	stopWork  context.CancelFunc
	fetchers  sync.WaitGroup
	running   sync.WaitGroup
	inflight  map[job.ID]*execution
	sessions  []*remote.Session // Work streams on a remote store
	// noMoreRuns is set once Stop has stopped fetching: a job pushed by
	// a remote server after that is handed back, not run.
	noMoreRuns bool
	complete   chan completion // never closed: a late worker may still send
	compStop   chan struct{}
	compDone   chan struct{}
	services   []*maintenance.Service
	hbDone     chan struct{}
	hbStop     chan struct{}
}

// execution is one running attempt.
type execution struct {
	row    *job.Job
	via    settler
	cancel context.CancelCauseFunc
	// renewed is when the lease was last granted or extended, on this
	// process's clock: heartbeats are scheduled from it, so that a
	// remote server's clock does not matter.
	renewed  time.Time
	gaveBack bool
}

// jobsAPI is what Insert, Get, Cancel and Retry call; *engine.Engine and
// *remote.Conn both serve it.
type jobsAPI interface {
	Enqueue(ctx context.Context, specs ...job.Spec) ([]store.InsertResult, error)
	Get(ctx context.Context, id job.ID) (*job.Job, error)
	Cancel(ctx context.Context, id job.ID) (*job.Job, error)
	Retry(ctx context.Context, id job.ID) (*job.Job, error)
}

// settler settles a leased job: the engine in this process, or the Work
// session of the job's queue on a remote server.
type settler interface {
	Heartbeat(ctx context.Context, id job.ID, token string, leaseFor time.Duration) (*job.Job, error)
	Fail(ctx context.Context, f engine.Failure) (*job.Job, error)
	Snooze(ctx context.Context, id job.ID, token string, delay time.Duration) (*job.Job, error)
}

// completion is one finished attempt waiting to be completed in a batch.
type completion struct {
	engine.Completion
	via settler
}

// NewClient returns a client over st.
func NewClient(st *Store, cfg *Config) (*Client, error) {
	if st == nil {
		return nil, errors.New("drover: NewClient: store is nil")
	}
	c := &Client{st: st, eng: st.eng, inflight: map[job.ID]*execution{}}
	c.api = st.eng
	if cfg != nil {
		c.cfg = *cfg
	}
	if st.remote != nil {
		// The server runs maintenance for its store.
		c.api = st.remote
		c.cfg.NoMaintenance = true
	}
	if c.cfg.JobTimeout == 0 {
		c.cfg.JobTimeout = DefaultJobTimeout
	}
	if c.cfg.LeaseFor == 0 {
		c.cfg.LeaseFor = DefaultLeaseFor
	}
	if c.cfg.LeaseFor < engine.MinLeaseFor {
		return nil, fmt.Errorf("drover: LeaseFor must be at least %s", engine.MinLeaseFor)
	}
	if c.cfg.ID == "" {
		host, _ := os.Hostname()
		c.cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.cfg.Logger == nil {
		c.cfg.Logger = slog.Default()
	}
	c.log = c.cfg.Logger
	if len(c.cfg.Queues) > 0 && c.cfg.Workers == nil {
		return nil, errors.New("drover: Config.Workers is required to work queues")
	}
	for q, qc := range c.cfg.Queues {
		if err := job.ValidateName(q); err != nil {
			return nil, fmt.Errorf("drover: queue %q: %w", q, err)
		}
		if qc.MaxWorkers < 0 {
			return nil, fmt.Errorf("drover: queue %q: MaxWorkers must not be negative", q)
		}
	}
	return c, nil
}

// Insert enqueues one job. When the job is unique and its key is held,
// nothing is inserted and the result holds the existing job with
// Duplicate set. On return without error the job is durably stored.
func (c *Client) Insert(ctx context.Context, args JobArgs, opts *InsertOpts) (*InsertResult, error) {
	res, err := c.InsertMany(ctx, []InsertManyParams{{Args: args, Opts: opts}})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// InsertMany enqueues jobs atomically: all of them or, on error, none.
func (c *Client) InsertMany(ctx context.Context, params []InsertManyParams) ([]*InsertResult, error) {
	specs, err := specsOf(params)
	if err != nil {
		return nil, err
	}
	res, err := c.api.Enqueue(ctx, specs...)
	if err != nil {
		return nil, err
	}
	return insertResults(res), nil
}

// specsOf turns insert params into job specs; validation errors of a
// batch name their job as "jobs[i].", as the engine does.
func specsOf(params []InsertManyParams) ([]job.Spec, error) {
	specs := make([]job.Spec, len(params))
	for i, p := range params {
		prefix := ""
		if len(params) > 1 {
			prefix = fmt.Sprintf("jobs[%d].", i)
		}
		if p.Args == nil {
			return nil, &job.ValidationError{Field: prefix + "args", Message: "is nil"}
		}
		sp, err := toSpec(p.Args, p.Opts)
		if err != nil {
			var ve *job.ValidationError
			if errors.As(err, &ve) {
				ve.Field = prefix + ve.Field
			}
			return nil, err
		}
		specs[i] = sp
	}
	return specs, nil
}

func insertResults(res []store.InsertResult) []*InsertResult {
	out := make([]*InsertResult, len(res))
	for i, r := range res {
		out[i] = &InsertResult{Job: r.Job, Duplicate: r.Duplicate}
	}
	return out
}

// Get returns one job with its error history.
func (c *Client) Get(ctx context.Context, id JobID) (*JobRow, error) { return c.api.Get(ctx, id) }

// Cancel cancels a job that has not finished. A running job's lease is
// revoked: its worker's context is cancelled at its next heartbeat and its
// result is refused.
func (c *Client) Cancel(ctx context.Context, id JobID) (*JobRow, error) {
	return c.api.Cancel(ctx, id)
}

// Retry makes a scheduled, retryable or finished job available now.
func (c *Client) Retry(ctx context.Context, id JobID) (*JobRow, error) {
	return c.api.Retry(ctx, id)
}

// Start starts working the configured queues and, unless NoMaintenance is
// set, the background services. It returns at once; call Stop to drain.
// A client starts once.
func (c *Client) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != 0 {
		return errors.New("drover: client already started")
	}
	c.state = 1
	base := context.WithoutCancel(ctx)
	c.fetchCtx, c.stopFetch = context.WithCancel(base)
	c.workCtx, c.stopWork = context.WithCancel(base)
	if !c.cfg.NoMaintenance {
		r := maintenance.DefaultRetention
		if c.cfg.Retention.Completed != 0 {
			r.Completed = c.cfg.Retention.Completed
		}
		if c.cfg.Retention.Cancelled != 0 {
			r.Cancelled = c.cfg.Retention.Cancelled
		}
		if c.cfg.Retention.Discarded != 0 {
			r.Discarded = c.cfg.Retention.Discarded
		}
		c.services = []*maintenance.Service{
			maintenance.NewPromoter(c.eng, 0, c.log),
			maintenance.NewLeaseRescuer(c.eng, 0, c.log),
			maintenance.NewPruner(c.eng, r, 0, c.log),
		}
		if c.st.cluster != nil {
			// On PostgreSQL only the elected node runs them.
			c.st.cluster.Attach(c.services...)
		}
		for _, s := range c.services {
			if err := s.Start(base); err != nil {
				return err
			}
		}
	}
	if len(c.cfg.Queues) == 0 {
		return nil
	}
	total := 0
	for _, qc := range c.cfg.Queues {
		total += workersOf(qc)
	}
	c.complete = make(chan completion, total)
	c.compStop, c.compDone = make(chan struct{}), make(chan struct{})
	var comps sync.WaitGroup
	for range completers {
		comps.Add(1)
		go func() { defer comps.Done(); c.completer() }()
	}
	go func() { comps.Wait(); close(c.compDone) }()
	c.hbStop, c.hbDone = make(chan struct{}), make(chan struct{})
	go c.heartbeater() //nolint:gosec // G118: workers outlive Start's ctx by design; Stop ends them
	for q, qc := range c.cfg.Queues {
		if c.st.remote != nil {
			if err := c.startRemote(q, workersOf(qc)); err != nil {
				return err
			}
			continue
		}
		c.fetchers.Add(1)
		go c.fetch(q, workersOf(qc))
	}
	return nil
}

func workersOf(qc QueueConfig) int {
	if qc.MaxWorkers == 0 {
		return DefaultMaxWorkers
	}
	return qc.MaxWorkers
}

// Stop stops fetching new jobs and waits for running jobs to finish until
// ctx ends. Then it cancels the contexts of the jobs still running and gives
// their leases back, so that another worker takes them at once without an
// attempt counted. It returns ctx's error when it had to give leases back.
// Stop is safe to call more than once and on a client never started.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.state != 1 {
		c.state = 2
		c.mu.Unlock()
		return nil
	}
	c.state = 2
	c.mu.Unlock()

	var err error
	if c.stopFetch != nil {
		c.stopFetch()
		c.fetchers.Wait()
		c.mu.Lock()
		c.noMoreRuns = true
		c.mu.Unlock()
		drained := make(chan struct{})
		go func() { c.running.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-ctx.Done():
			err = ctx.Err()
			c.giveBack()
			// Workers that honour cancellation return at once; one that
			// does not is not waited for: its lease is back already and
			// its late result will be refused.
			select {
			case <-drained:
			case <-time.After(time.Second):
			}
		}
	}
	if c.complete != nil {
		close(c.hbStop)
		<-c.hbDone
		close(c.compStop)
		<-c.compDone
	}
	c.closeSessions()
	if c.st.cluster != nil && len(c.services) > 0 {
		c.st.cluster.Detach(c.services...)
	}
	for _, s := range c.services {
		s.Stop()
	}
	c.stopWork()
	return err
}

// giveBack cancels every running attempt and hands its lease back.
func (c *Client) giveBack() {
	c.mu.Lock()
	var execs []*execution
	for _, e := range c.inflight {
		e.gaveBack = true
		execs = append(execs, e)
	}
	c.mu.Unlock()
	c.stopWork()
	for _, e := range execs {
		c.release(e.via, e.row)
	}
}

// release gives a lease back: the job is available again at once and the
// attempt does not count.
func (c *Client) release(via settler, row *job.Job) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := via.Snooze(ctx, row.ID, row.LeaseToken, 0); err != nil && !errors.Is(err, job.ErrLeaseLost) {
		c.log.Warn("give back lease", "job_id", row.ID, "err", err)
	}
}

// fetch leases jobs of queue whenever a worker slot is free.
func (c *Client) fetch(queue string, slots int) {
	defer c.fetchers.Done()
	sem := make(chan struct{}, slots)
	for {
		// Wait for one free slot, then take every other free one.
		select {
		case sem <- struct{}{}:
		case <-c.fetchCtx.Done():
			return
		}
		n := 1 + c.gatherSlots(sem, slots-1)
		jobs, err := c.eng.Lease(c.fetchCtx, engine.LeaseRequest{
			Queues: []string{queue}, Max: min(n, engine.MaxLeaseBatch), Wait: 5 * time.Second,
			LeaseFor: c.cfg.LeaseFor, Worker: c.cfg.ID,
		})
		for range n - len(jobs) {
			<-sem
		}
		if err != nil {
			if c.fetchCtx.Err() != nil {
				return
			}
			c.log.Error("lease jobs", "queue", queue, "err", err)
			select {
			case <-time.After(time.Second):
			case <-c.fetchCtx.Done():
				return
			}
			continue
		}
		for _, j := range jobs {
			c.running.Add(1)
			go func() {
				defer c.running.Done()
				defer func() { <-sem }()
				c.execute(c.eng, j)
			}()
		}
	}
}

// fetchCooldown is how long a fetcher with few free slots waits for more
// before it leases: fewer, larger leases cost the store far less than one
// lease per freed slot, and a job waits at most this long for it.
const fetchCooldown = 2 * time.Millisecond

// gatherSlots takes up to max more free slots from sem. When fewer than a
// quarter of the slots are free it waits up to fetchCooldown for more.
func (c *Client) gatherSlots(sem chan struct{}, max int) int {
	n := 0
	for n < max {
		select {
		case sem <- struct{}{}:
			n++
			continue
		default:
		}
		break
	}
	if want := (max + 1) / 4; n < want {
		t := time.NewTimer(fetchCooldown)
		defer t.Stop()
		for n < want {
			select {
			case sem <- struct{}{}:
				n++
			case <-t.C:
				return n
			case <-c.fetchCtx.Done():
				return n
			}
		}
	}
	return n
}

// execute runs one attempt and settles it via the engine or the remote
// session that leased it.
func (c *Client) execute(via settler, row *job.Job) {
	entry := c.cfg.Workers.byKind[row.Kind]
	timeout := c.cfg.JobTimeout
	if entry != nil && entry.opts.Timeout != 0 {
		timeout = entry.opts.Timeout
	}
	if row.Timeout > 0 {
		timeout = row.Timeout
	}
	ctx, cancel := context.WithCancelCause(context.WithValue(c.workCtx, jobCtxKey{}, row))
	defer cancel(nil)
	exec := &execution{row: row, via: via, cancel: cancel, renewed: time.Now()}
	c.mu.Lock()
	c.inflight[row.ID] = exec
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.inflight, row.ID)
		c.mu.Unlock()
	}()

	var err error
	if entry == nil {
		err = fmt.Errorf("no worker registered for kind %q", row.Kind)
	} else {
		wctx := ctx
		if timeout > 0 {
			var tcancel context.CancelFunc
			wctx, tcancel = context.WithTimeout(ctx, timeout)
			defer tcancel()
		}
		err = runWorker(wctx, entry, row)
		if err != nil && wctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
			err = fmt.Errorf("attempt timed out after %s: %w", timeout, err)
		}
	}
	c.mu.Lock()
	gaveBack := exec.gaveBack
	c.mu.Unlock()
	if gaveBack {
		return // Stop handed the lease back already.
	}
	if cause := context.Cause(ctx); errors.Is(cause, job.ErrLeaseLost) {
		c.log.Warn("job lease lost while running; result dropped", "job_id", row.ID, "kind", row.Kind)
		return
	}
	if err == nil {
		c.complete <- completion{Completion: engine.Completion{ID: row.ID, LeaseToken: row.LeaseToken}, via: via}
		return
	}
	c.settleError(via, row, entry, err)
}

// runWorker calls the worker, turning a panic into a *PanicError.
func runWorker(ctx context.Context, entry *workerEntry, row *job.Job) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &PanicError{Value: v, Stack: string(debug.Stack())}
		}
	}()
	return entry.work(ctx, row)
}

// settleError records a failed, snoozed, cancelled or discarded attempt.
func (c *Client) settleError(via settler, row *job.Job, entry *workerEntry, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snooze, cancelE, discard, retry := asControl(err)
	if snooze != nil {
		if _, serr := via.Snooze(ctx, row.ID, row.LeaseToken, snooze.delay); serr != nil {
			c.log.Error("snooze job", "job_id", row.ID, "err", serr)
		}
		return
	}
	f := engine.Failure{ID: row.ID, LeaseToken: row.LeaseToken, Message: err.Error()}
	var perr *PanicError
	if errors.As(err, &perr) {
		f.Detail = perr.Stack
	}
	switch {
	case cancelE != nil:
		f.Cancel = true
	case discard != nil:
		f.Discard = true
	case retry != nil:
		d := retry.delay
		f.RetryIn = &d
	case entry != nil && entry.opts.Backoff != nil:
		// Decided here, so that it travels to a remote server too; the
		// server still discards a job with no attempts left.
		d := entry.opts.Backoff(row.Attempt)
		f.RetryIn = &d
	}
	j, ferr := via.Fail(ctx, f)
	if ferr != nil {
		c.log.Error("record job failure", "job_id", row.ID, "err", ferr)
		return
	}
	c.log.Info("job attempt failed", "job_id", row.ID, "kind", row.Kind, "attempt", row.Attempt, "state", j.State, "err", err.Error())
}

// completer batches completions from all workers into few store calls.
// completers is how many goroutines flush completions. With more than
// one, a batch gathers while another waits for its commit, so the store's
// writer always has the next batch queued.
const completers = 2

func (c *Client) completer() {
	batch := make([]completion, 0, 1024)
	for {
		stopping := false
		select {
		case first := <-c.complete:
			batch = append(batch[:0], first)
		case <-c.compStop:
			stopping = true
			batch = batch[:0]
		}
	more:
		for len(batch) < cap(batch) {
			select {
			case x := <-c.complete:
				batch = append(batch, x)
			default:
				break more
			}
		}
		if len(batch) > 0 {
			c.flush(batch)
		}
		if stopping && len(batch) < cap(batch) {
			return
		}
	}
}

// flush completes a batch, in one store call per engine or session.
func (c *Client) flush(batch []completion) {
	if len(batch) > 0 && allVia(batch, batch[0].via) {
		c.flushVia(batch[0].via, completionsOf(batch))
		return
	}
	groups := map[settler][]engine.Completion{}
	for _, x := range batch {
		groups[x.via] = append(groups[x.via], x.Completion)
	}
	for via, cs := range groups {
		c.flushVia(via, cs)
	}
}

func allVia(batch []completion, via settler) bool {
	for _, x := range batch {
		if x.via != via {
			return false
		}
	}
	return true
}

func completionsOf(batch []completion) []engine.Completion {
	cs := make([]engine.Completion, len(batch))
	for i, x := range batch {
		cs[i] = x.Completion
	}
	return cs
}

// flushVia completes cs, trying again those whose answer did not come
// (a store or server that is unavailable for a moment).
func (c *Client) flushVia(via settler, cs []engine.Completion) {
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs, err := completeVia(ctx, via, cs)
		cancel()
		if err == nil {
			var again []engine.Completion
			for i, e := range errs {
				switch {
				case e == nil:
				case errors.Is(e, job.ErrUnavailable), errors.Is(e, context.DeadlineExceeded):
					again = append(again, cs[i])
					err = e
				default:
					c.log.Warn("complete job refused", "job_id", cs[i].ID, "err", e)
				}
			}
			if len(again) == 0 {
				return
			}
			cs = again
		}
		if try == 4 {
			// The jobs stay running and are re-delivered when their
			// leases expire: at-least-once, never lost.
			c.log.Error("complete jobs; giving up, they will be re-delivered", "count", len(cs), "err", err)
			return
		}
		time.Sleep(time.Duration(100<<try) * time.Millisecond)
	}
}

// completeVia completes cs in one call and returns each one's error.
func completeVia(ctx context.Context, via settler, cs []engine.Completion) ([]error, error) {
	switch v := via.(type) {
	case *remote.Session:
		return v.Complete(ctx, cs), nil
	case *engine.Engine:
		res, err := v.CompleteMany(ctx, cs)
		if err != nil {
			return nil, err
		}
		errs := make([]error, len(res))
		for i, r := range res {
			errs[i] = r.Err
		}
		return errs, nil
	default:
		return nil, fmt.Errorf("drover: no way to complete via %T", via)
	}
}

// heartbeater renews the leases of running jobs before they expire and
// cancels an attempt whose lease was lost.
func (c *Client) heartbeater() {
	defer close(c.hbDone)
	every := max(c.cfg.LeaseFor/6, 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.hbStop:
			return
		case <-t.C:
		}
		now := time.Now()
		c.mu.Lock()
		var due []*execution
		for _, e := range c.inflight {
			// Renew once a third of the lease has passed.
			if now.Sub(e.renewed) >= c.cfg.LeaseFor/3 && !e.gaveBack {
				due = append(due, e)
			}
		}
		c.mu.Unlock()
		for _, e := range due {
			ctx, cancel := context.WithTimeout(context.Background(), every)
			_, err := e.via.Heartbeat(ctx, e.row.ID, e.row.LeaseToken, c.cfg.LeaseFor)
			cancel()
			switch {
			case err == nil:
				c.mu.Lock()
				e.renewed = now
				c.mu.Unlock()
			case errors.Is(err, job.ErrLeaseLost), errors.Is(err, job.ErrNotFound):
				e.cancel(fmt.Errorf("job %d: %w", e.row.ID, job.ErrLeaseLost))
			default:
				c.log.Warn("heartbeat", "job_id", e.row.ID, "err", err)
			}
		}
	}
}
