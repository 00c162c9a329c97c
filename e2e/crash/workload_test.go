//go:build linux

package crash

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
)

// jobKind is the kind of every job the harness enqueues.
const jobKind = "crash.work"

// queues are the queues the producers spread jobs over; every worker
// leases from both.
var queues = []string{"crash-a", "crash-b"}

// A plan is everything an iteration does that the seed decides.
type plan struct {
	seed      uint64
	producers [][]request
	workers   int
	leaseFor  time.Duration
	faults    []fault
}

// A request is one enqueue call: one job or a batch.
type request struct {
	name  string // "p1-r7"
	key   string // the Idempotency-Key; empty for none
	batch bool
	jobs  []httpapi.EnqueueRequest
	tags  []string      // each job's args.tag, in order
	pause time.Duration // before it is sent
}

// A fault is one crash: SIGKILL of the server, an immediate stop of
// PostgreSQL, or both at once.
type fault struct {
	after  time.Duration // from the moment everything is up again
	kill   bool
	pgStop bool
	down   time.Duration // how long PostgreSQL stays down
}

func (f fault) String() string {
	switch {
	case f.kill && f.pgStop:
		return fmt.Sprintf("kill -9 and PostgreSQL stop after %s", f.after)
	case f.pgStop:
		return fmt.Sprintf("PostgreSQL stop after %s", f.after)
	default:
		return fmt.Sprintf("kill -9 after %s", f.after)
	}
}

// newPlan draws an iteration's workload from seed. With pgStop, faults
// may stop PostgreSQL as well as kill the server.
func newPlan(seed uint64, pgStop bool) *plan {
	rng := newRand(seed, 0x9e3779b97f4a7c15)
	p := &plan{seed: seed, workers: 2 + rng.IntN(3), leaseFor: time.Second}
	// The faults first, so that the producers can spread their requests
	// over the time they take: a crash should cut requests off.
	span := time.Duration(0)
	for range 1 + rng.IntN(3) {
		f := fault{after: time.Duration(50+rng.IntN(650)) * time.Millisecond, kill: true}
		if pgStop {
			switch rng.IntN(3) {
			case 0: // kill alone
			case 1:
				f.kill, f.pgStop = false, true
			case 2:
				f.pgStop = true
			}
			f.down = time.Duration(100+rng.IntN(900)) * time.Millisecond
		}
		p.faults = append(p.faults, f)
		span += f.after + f.down + 200*time.Millisecond // about a restart
	}
	for pi := range 2 + rng.IntN(2) {
		n := 15 + rng.IntN(26)
		// Pauses of span/n on average; the time the requests themselves
		// take stretches the production a little past the last fault.
		maxPause := max(int(2*span/time.Duration(n)/time.Millisecond), 1)
		var reqs []request
		for ri := range n {
			r := request{name: fmt.Sprintf("p%d-r%d", pi, ri), pause: time.Duration(rng.IntN(maxPause)) * time.Millisecond}
			if rng.IntN(10) < 6 {
				r.key = fmt.Sprintf("crash-%d-%s", seed, r.name)
			}
			jobs := 1
			if rng.IntN(4) == 0 {
				r.batch, jobs = true, 2+rng.IntN(11)
			}
			for i := range jobs {
				tag := fmt.Sprintf("%s-i%d", r.name, i)
				j := httpapi.EnqueueRequest{
					Kind:        jobKind,
					Queue:       queues[rng.IntN(len(queues))],
					Args:        json.RawMessage(fmt.Sprintf(`{"tag":%q}`, tag)),
					Priority:    1 + rng.IntN(9),
					MaxAttempts: 2 + rng.IntN(2),
				}
				if rng.IntN(10) == 0 {
					d := httpapi.Duration(150 * time.Millisecond)
					j.Delay = &d
				}
				r.jobs = append(r.jobs, j)
				r.tags = append(r.tags, tag)
			}
			reqs = append(reqs, r)
		}
		p.producers = append(p.producers, reqs)
	}
	return p
}

// newRand returns a generator for one stream of seed.
func newRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

// Outcomes of an attempt, in percent: the rest completes.
const (
	pctFailNow     = 18 // fail, retry at once
	pctFailLater   = 5  // fail, retry after 300ms (through the promoter)
	pctDiscard     = 3  // fail with discard
	pctHeartbeat   = 2  // run past the lease, heartbeating, then complete
	pctAbandon     = 4  // never settle: the worker "crashed"
	pctSlow        = 3  // outlive the lease without heartbeats, then complete
	outcomeRescued = "lease expired: the worker stopped heartbeating before settling the job"
)

// outcome is what a worker does with attempt of the job tagged tag: a
// function of the seed and the attempt, not of which worker got it.
func outcome(seed uint64, tag string, attempt int) int {
	h := fnv.New64a()
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], uint64(attempt)) //nolint:gosec // attempts are small and positive
	h.Write(b[:])
	h.Write([]byte(tag))
	return int(h.Sum64() % 100)
}

// grant is a lease a worker received.
type grant struct {
	JobID       int64     `json:"job_id"`
	Tag         string    `json:"tag"`
	Token       string    `json:"token"`
	Attempt     int       `json:"attempt"`
	MaxAttempts int       `json:"max_attempts"`
	AttemptedAt time.Time `json:"attempted_at"`
	// ExpiresAt is the lease's end as the server last acknowledged it (a
	// heartbeat moves it).
	ExpiresAt time.Time `json:"expires_at"`
	Worker    string    `json:"worker"`
	// ReceivedAt is when the lease's reply reached the worker, and
	// FailSentAt when the worker first sent its fail: the harness's clock,
	// which orders events causally where the server's timestamps (taken
	// as each request arrives) need not.
	ReceivedAt time.Time `json:"received_at"`
	FailSentAt time.Time `json:"fail_sent_at,omitzero"`
}

// settle is the end of one settling call: the status of its last try.
type settle struct {
	JobID   int64  `json:"job_id"`
	Token   string `json:"token"`
	Attempt int    `json:"attempt"`
	Op      string `json:"op"` // complete, fail, discard, or stale-complete and stale-fail (see probe)
	Status  int    `json:"status"`
	State   string `json:"state,omitempty"` // the job's state in a 2xx reply
}

// ledger is the harness's own log of what the server acknowledged. It is
// safe for concurrent use.
type ledger struct {
	mu sync.Mutex
	// Acked maps the tag of every acknowledged job to its id.
	Acked map[string]int64 `json:"acked"`
	// Unknown holds the tags of requests without a key whose outcome the
	// crash hid: their jobs may or may not exist.
	Unknown map[string]bool `json:"unknown"`
	// Keyed holds the Idempotency-Key of each job's request, by tag.
	Keyed    map[string]string `json:"keyed"`
	Grants   []*grant          `json:"grants"`
	byToken  map[string]*grant
	byJob    map[int64][]*grant
	Settles  []settle `json:"settles"`
	Problems []string `json:"problems"` // violations seen while running
	// Counters for the summary.
	KeyedRetried int `json:"keyed_retried"` // keyed requests acknowledged after a failed try
	Replays      int `json:"replays"`       // keyed requests repeated after their acknowledgement
}

func newLedger() *ledger {
	return &ledger{Acked: map[string]int64{}, Unknown: map[string]bool{}, Keyed: map[string]string{}, byToken: map[string]*grant{}, byJob: map[int64][]*grant{}}
}

func (l *ledger) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Problems = append(l.Problems, fmt.Sprintf(format, args...))
}

// client sends the harness's requests to the server's current address.
type client struct {
	srv *server
	hc  *http.Client
	tr  *http.Transport
}

func newClient(srv *server) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	return &client{srv: srv, tr: tr, hc: &http.Client{Timeout: 20 * time.Second, Transport: tr}}
}

// do sends a request with an optional JSON body and returns the status
// and the body. err is a transport error: the request may or may not have
// reached the server.
func (c *client) do(ctx context.Context, method, path string, hdr map[string]string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.srv.base()+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		// The reply was cut off: the request may have been carried out.
		return 0, nil, err
	}
	return resp.StatusCode, data, nil
}

// transient reports an answer that says "try again": no answer at all
// (the server is down), 429, or a 5xx (PostgreSQL is down).
func transient(status int, err error) bool {
	return err != nil || status == http.StatusTooManyRequests || status >= 500
}

// pause waits d or until ctx ends, and reports whether ctx is still live.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// retryPause is the wait between two tries of a request that met a crash.
const retryPause = 25 * time.Millisecond

// produce sends reqs in order. A request with a key is retried with the
// same key until it is acknowledged; one without a key is sent once, and
// when a crash hides its outcome its jobs are recorded as unknown. At the
// end, some acknowledged keyed requests are sent again to check that the
// server returns the same jobs.
func produce(ctx context.Context, c *client, l *ledger, seed uint64, producer int, reqs []request) {
	rng := newRand(seed, uint64(producer)+1) //nolint:gosec // a handful of producers
	var acked []request
	ackedIDs := map[string][]int64{}
	for _, r := range reqs {
		if !pause(ctx, r.pause) {
			return
		}
		ids, ok := send(ctx, c, l, r)
		if ok && r.key != "" {
			acked = append(acked, r)
			ackedIDs[r.name] = ids
		}
	}
	for _, r := range acked {
		if rng.IntN(10) != 0 {
			continue
		}
		ids, status, err := post(ctx, c, r)
		for transient(status, err) && ctx.Err() == nil {
			pause(ctx, retryPause)
			ids, status, err = post(ctx, c, r)
		}
		if ctx.Err() != nil {
			return
		}
		l.mu.Lock()
		l.Replays++
		l.mu.Unlock()
		if status/100 != 2 || fmt.Sprint(ids) != fmt.Sprint(ackedIDs[r.name]) {
			l.problem("request %s repeated with its Idempotency-Key %q got status %d and jobs %v; the first reply had jobs %v", r.name, r.key, status, ids, ackedIDs[r.name])
		}
	}
}

// send sends one request as produce says, records the outcome and
// returns the acknowledged ids.
func send(ctx context.Context, c *client, l *ledger, r request) ([]int64, bool) {
	tries := 0
	for {
		tries++
		ids, status, err := post(ctx, c, r)
		switch {
		case err == nil && status/100 == 2:
			l.mu.Lock()
			defer l.mu.Unlock()
			if len(ids) != len(r.tags) {
				l.Problems = append(l.Problems, fmt.Sprintf("request %s of %d jobs was acknowledged with %d ids", r.name, len(r.tags), len(ids)))
				return nil, false
			}
			for i, tag := range r.tags {
				l.Acked[tag] = ids[i]
				if r.key != "" {
					l.Keyed[tag] = r.key
				}
			}
			if tries > 1 && r.key != "" {
				l.KeyedRetried++
			}
			return ids, true
		case ctx.Err() != nil:
			// Possibly sent and stored, never acknowledged. (The
			// iteration fails anyway: its producers did not finish.)
			l.mu.Lock()
			for _, tag := range r.tags {
				l.Unknown[tag] = true
			}
			l.mu.Unlock()
			return nil, false
		case status == http.StatusTooManyRequests:
			// Nothing was done (docs/api.md): safe to repeat even
			// without a key.
		case transient(status, err) && r.key != "":
			// The case the key exists for: repeat with the same key.
		case transient(status, err):
			l.mu.Lock()
			for _, tag := range r.tags {
				l.Unknown[tag] = true
			}
			l.mu.Unlock()
			return nil, false
		default:
			l.problem("request %s refused: status %d", r.name, status)
			return nil, false
		}
		if !pause(ctx, retryPause) {
			continue // the next round records the outcome
		}
	}
}

// post sends r once and returns the ids of its reply.
func post(ctx context.Context, c *client, r request) ([]int64, int, error) {
	hdr := map[string]string{}
	if r.key != "" {
		hdr["Idempotency-Key"] = r.key
	}
	var (
		status int
		data   []byte
		err    error
	)
	if r.batch {
		status, data, err = c.do(ctx, http.MethodPost, "/v1/jobs/batch", hdr, map[string]any{"jobs": r.jobs})
	} else {
		status, data, err = c.do(ctx, http.MethodPost, "/v1/jobs", hdr, r.jobs[0])
	}
	if err != nil || status/100 != 2 {
		return nil, status, err
	}
	if r.batch {
		var out struct {
			Jobs []httpapi.Job `json:"jobs"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return nil, 0, fmt.Errorf("decode batch reply: %w", err)
		}
		ids := make([]int64, len(out.Jobs))
		for i, j := range out.Jobs {
			ids[i] = j.ID
		}
		return ids, status, nil
	}
	var j httpapi.Job
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, 0, fmt.Errorf("decode reply: %w", err)
	}
	return []int64{j.ID}, status, nil
}

// tagOf returns the tag in a job's args.
func tagOf(args json.RawMessage) string {
	var a struct {
		Tag string `json:"tag"`
	}
	_ = json.Unmarshal(args, &a)
	return a.Tag
}

// worker leases jobs until leaseCtx ends and handles each in its own
// goroutine, as the plan's outcomes say. Settling calls run on settleCtx,
// so that a worker told to stop still settles what it holds.
type worker struct {
	name     string
	c        *client
	l        *ledger
	seed     uint64
	leaseFor time.Duration
	rng      *rand.Rand
}

func (w *worker) run(leaseCtx, settleCtx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	wait := httpapi.Duration(500 * time.Millisecond)
	leaseFor := httpapi.Duration(w.leaseFor)
	for leaseCtx.Err() == nil {
		body := map[string]any{"queues": queues, "max": 1 + w.rng.IntN(4), "wait": wait, "lease_for": leaseFor, "worker": w.name}
		status, data, err := w.c.do(leaseCtx, http.MethodPost, "/v1/lease", nil, body)
		if transient(status, err) {
			pause(leaseCtx, retryPause)
			continue
		}
		if status != http.StatusOK {
			w.l.problem("worker %s: lease answered %d: %s", w.name, status, data)
			pause(leaseCtx, retryPause)
			continue
		}
		var out struct {
			Jobs []httpapi.Job `json:"jobs"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			w.l.problem("worker %s: decode lease reply: %v", w.name, err)
			continue
		}
		received := time.Now()
		for _, j := range out.Jobs {
			g := &grant{JobID: j.ID, Tag: tagOf(j.Args), Token: j.LeaseToken, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Worker: w.name, ReceivedAt: received}
			if j.AttemptedAt != nil {
				g.AttemptedAt = *j.AttemptedAt
			}
			if j.LeaseExpiry != nil {
				g.ExpiresAt = *j.LeaseExpiry
			}
			w.l.mu.Lock()
			w.l.Grants = append(w.l.Grants, g)
			if w.l.byToken[g.Token] != nil {
				w.l.Problems = append(w.l.Problems, fmt.Sprintf("lease token %s handed out twice (jobs %d and %d)", g.Token, w.l.byToken[g.Token].JobID, g.JobID))
			}
			w.l.byToken[g.Token] = g
			var stale *grant
			if prev := w.l.byJob[g.JobID]; len(prev) > 0 {
				stale = prev[len(prev)-1]
			}
			w.l.byJob[g.JobID] = append(w.l.byJob[g.JobID], g)
			w.l.mu.Unlock()
			wg.Go(func() {
				if stale != nil {
					w.probe(settleCtx, g, stale)
				}
				w.handle(settleCtx, g)
			})
		}
		// Wait for this batch before leasing more, as a worker with that
		// many slots would.
		wg.Wait()
	}
}

// handle works one attempt as outcome says.
func (w *worker) handle(ctx context.Context, g *grant) {
	o := outcome(w.seed, g.Tag, g.Attempt)
	work := time.Duration(o%16) * time.Millisecond
	switch {
	case o < pctFailNow:
		pause(ctx, work)
		w.fail(ctx, g, "0s", false)
	case o < pctFailNow+pctFailLater:
		pause(ctx, work)
		w.fail(ctx, g, "300ms", false)
	case o < pctFailNow+pctFailLater+pctDiscard:
		pause(ctx, work)
		w.fail(ctx, g, "", true)
	case o < pctFailNow+pctFailLater+pctDiscard+pctHeartbeat:
		step := w.leaseFor * 6 / 10
		pause(ctx, step)
		if !w.heartbeat(ctx, g) {
			return
		}
		pause(ctx, step)
		w.complete(ctx, g)
	case o < pctFailNow+pctFailLater+pctDiscard+pctHeartbeat+pctAbandon:
		// The worker "crashed": the lease has to run out.
	case o < pctFailNow+pctFailLater+pctDiscard+pctHeartbeat+pctAbandon+pctSlow:
		pause(ctx, w.leaseFor+300*time.Millisecond)
		w.complete(ctx, g)
	default:
		pause(ctx, work)
		w.complete(ctx, g)
	}
}

// probe plays a stale worker while g's attempt runs: it tries to settle
// the job with the token of an earlier attempt, stale, which the server
// must refuse with 409 lease_lost (the checker counts a 2xx as a
// violation). Half the probes complete, half fail.
func (w *worker) probe(ctx context.Context, g, stale *grant) {
	var body map[string]any
	op := "stale-complete"
	if outcome(w.seed, g.Tag+"#probe", g.Attempt)%2 == 0 {
		body = map[string]any{"lease_token": stale.Token, "output": map[string]any{"token": stale.Token, "attempt": stale.Attempt}}
	} else {
		op = "stale-fail"
		body = map[string]any{"lease_token": stale.Token, "error": fmt.Sprintf("crash harness: stale fail of attempt %d token %s", stale.Attempt, stale.Token), "retry_in": "0s"}
	}
	w.settle(ctx, stale, op, "/"+strings.TrimPrefix(op, "stale-"), body)
}

func (w *worker) complete(ctx context.Context, g *grant) {
	body := map[string]any{"lease_token": g.Token, "output": map[string]any{"token": g.Token, "attempt": g.Attempt}}
	w.settle(ctx, g, "complete", "/complete", body)
}

func (w *worker) fail(ctx context.Context, g *grant, retryIn string, discard bool) {
	op := "fail"
	if discard {
		op = "discard"
	}
	body := map[string]any{"lease_token": g.Token, "error": fmt.Sprintf("crash harness: %s attempt %d token %s", op, g.Attempt, g.Token)}
	if retryIn != "" {
		body["retry_in"] = retryIn
	}
	if discard {
		body["discard"] = true
	}
	w.settle(ctx, g, op, "/fail", body)
}

// settle sends a settling call until it gets an answer that is not
// transient (the same token makes repeats safe) and records the answer.
func (w *worker) settle(ctx context.Context, g *grant, op, suffix string, body any) {
	path := fmt.Sprintf("/v1/jobs/%d%s", g.JobID, suffix)
	if op == "fail" || op == "discard" {
		w.l.mu.Lock()
		g.FailSentAt = time.Now()
		w.l.mu.Unlock()
	}
	for {
		status, data, err := w.c.do(ctx, http.MethodPost, path, nil, body)
		if transient(status, err) {
			if !pause(ctx, retryPause) {
				w.l.problem("worker %s: %s of job %d attempt %d never answered: %v", w.name, op, g.JobID, g.Attempt, ctx.Err())
				return
			}
			continue
		}
		s := settle{JobID: g.JobID, Token: g.Token, Attempt: g.Attempt, Op: op, Status: status}
		switch {
		case status == http.StatusOK:
			var j httpapi.Job
			if err := json.Unmarshal(data, &j); err != nil {
				w.l.problem("worker %s: decode %s reply: %v", w.name, op, err)
			}
			s.State = j.State
		case status == http.StatusConflict && strings.Contains(string(data), "lease_lost"):
			// The lease is gone (expired and taken back, or the job
			// finished): drop the result, as workers do.
		default:
			w.l.problem("worker %s: %s of job %d attempt %d answered %d: %s", w.name, op, g.JobID, g.Attempt, status, data)
		}
		w.l.mu.Lock()
		w.l.Settles = append(w.l.Settles, s)
		w.l.mu.Unlock()
		return
	}
}

// heartbeat extends g's lease and reports whether the worker still holds
// it. A heartbeat that meets a crash is not repeated: the complete that
// follows will tell.
func (w *worker) heartbeat(ctx context.Context, g *grant) bool {
	body := map[string]any{"lease_token": g.Token, "lease_for": httpapi.Duration(w.leaseFor)}
	status, data, err := w.c.do(ctx, http.MethodPost, fmt.Sprintf("/v1/jobs/%d/heartbeat", g.JobID), nil, body)
	switch {
	case transient(status, err):
		return true
	case status == http.StatusOK:
		var hb struct {
			LeaseExpiresAt time.Time `json:"lease_expires_at"`
		}
		if err := json.Unmarshal(data, &hb); err != nil {
			w.l.problem("worker %s: decode heartbeat reply: %v", w.name, err)
			return true
		}
		w.l.mu.Lock()
		if hb.LeaseExpiresAt.After(g.ExpiresAt) {
			g.ExpiresAt = hb.LeaseExpiresAt
		}
		w.l.mu.Unlock()
		return true
	case status == http.StatusConflict:
		return false
	default:
		w.l.problem("worker %s: heartbeat of job %d answered %d: %s", w.name, g.JobID, status, data)
		return false
	}
}
