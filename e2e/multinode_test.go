package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/restclient"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// The multi-node tests run several `drover serve` processes on one
// PostgreSQL schema and check what the cluster promises: a job is
// completed once whichever node its worker talks to, a dead node's leases
// are taken back, and exactly one node at a time runs maintenance.

const (
	// mnLeaseFor is the workers' lease: short, so that the dead workers'
	// jobs come back soon.
	mnLeaseFor = 3 * time.Second
	// mnFailoverDeadline bounds a takeover after the leader is killed: the
	// elector's TTL (15s, no flag shortens it) plus its renew period (5s),
	// doubled for a slow machine.
	mnFailoverDeadline = 40 * time.Second
	// mnHandoverDeadline bounds a takeover after the leader stops
	// gracefully. The leader renews every 5s for 15s, so without the
	// resign on stop the next node could not be elected sooner than 10s
	// after the SIGTERM: a takeover before then proves the resign worked.
	mnHandoverDeadline = 10 * time.Second
	// mnLeaseExpired is the error a rescued attempt gets (docs/api.md).
	mnLeaseExpired = "lease expired: the worker stopped heartbeating before settling the job"
	// mnRescueLog is what a node logs when it re-delivers a job whose
	// lease expired; only the leader does.
	mnRescueLog = "lease expired; job re-delivered"
	mnGainedLog = "leader: gained the role"
)

// mnNode is one drover serve process of a cluster.
type mnNode struct {
	id   string
	base string
	p    *proc
	c    *restclient.Client
	hc   *http.Client // the same client, for the workers' raw calls
}

// mnStart starts `drover serve` as node id on schema of the database at
// url, without waiting for it to be ready. Its stderr is logged when the
// test fails, and it is killed when the test ends.
func mnStart(t *testing.T, url, schema, id string) *mnNode {
	t.Helper()
	addr := freeAddr(t)
	n := &mnNode{id: id, base: "http://" + addr}
	// Registered before start registers the kill, so that it runs after
	// it and shows the whole log.
	t.Cleanup(func() {
		if t.Failed() && n.p != nil {
			t.Logf("node %s (%s) stderr:\n%s", n.id, n.base, n.p.stderr.String())
		}
	})
	// The URL goes in the environment, where ps does not show it.
	n.p = start(t, []string{"DROVER_DATABASE_URL=" + url},
		"serve", "--database-schema", schema, "--node-id", id, "--addr", addr, "--log-format", "json")
	tr := &http.Transport{MaxIdleConnsPerHost: 32}
	t.Cleanup(tr.CloseIdleConnections)
	n.hc = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	c, err := restclient.New(n.base, "", n.hc)
	if err != nil {
		t.Fatal(err)
	}
	n.c = c
	return n
}

// mnLeaderMetric returns node n's drover_leader gauge (0 or 1), or an
// error when the node does not answer or lacks the gauge.
func mnLeaderMetric(ctx context.Context, n *mnNode) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.base+"/metrics", nil)
	if err != nil {
		return -1, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return -1, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1, err
	}
	if resp.StatusCode != http.StatusOK {
		return -1, fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	for line := range strings.Lines(string(body)) {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "drover_leader" {
			switch f[1] {
			case "0":
				return 0, nil
			case "1":
				return 1, nil
			}
			return -1, fmt.Errorf("drover_leader %s, want 0 or 1", f[1])
		}
	}
	return -1, errors.New("/metrics has no drover_leader")
}

// mnPoll is one round of drover_leader readings, node by node.
type mnPoll struct {
	leaders []*mnNode
	errs    []string // nodes that did not answer, and why
}

func (p mnPoll) String() string {
	ids := make([]string, len(p.leaders))
	for i, n := range p.leaders {
		ids[i] = n.id
	}
	return fmt.Sprintf("leaders %q, errors %q", ids, p.errs)
}

func mnPollLeaders(ctx context.Context, nodes []*mnNode) mnPoll {
	var p mnPoll
	for _, n := range nodes {
		v, err := mnLeaderMetric(ctx, n)
		switch {
		case err != nil:
			p.errs = append(p.errs, n.id+": "+err.Error())
		case v == 1:
			p.leaders = append(p.leaders, n)
		}
	}
	return p
}

// mnWaitOneLeader polls nodes until every one answers and exactly one
// reports drover_leader 1, and returns it. Two leaders in one round fail
// the test.
func mnWaitOneLeader(t *testing.T, nodes []*mnNode, d time.Duration) *mnNode {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		p := mnPollLeaders(t.Context(), nodes)
		if len(p.leaders) > 1 {
			t.Fatalf("two nodes report drover_leader 1 at once: %v", p)
		}
		if len(p.leaders) == 1 && len(p.errs) == 0 {
			return p.leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no single leader among %d nodes after %s; last poll: %v", len(nodes), d, p)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mnLogRecords parses a node's JSON log lines into maps, skipping lines
// that are not JSON objects.
func mnLogRecords(stderr string) []map[string]any {
	var out []map[string]any
	for _, line := range lines(stderr) {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// mnLogged reports whether a node's log has a record with message msg.
func mnLogged(stderr, msg string) bool {
	return slices.ContainsFunc(mnLogRecords(stderr), func(r map[string]any) bool { return r["msg"] == msg })
}

// mnRescuedIDs returns the ids of the jobs that a node's log says it
// re-delivered after their lease expired.
func mnRescuedIDs(stderr string) map[int64]bool {
	out := map[int64]bool{}
	for _, r := range mnLogRecords(stderr) {
		if id, ok := r["job_id"].(float64); ok && r["msg"] == mnRescueLog {
			out[int64(id)] = true
		}
	}
	return out
}

// mnLeased is the part of a leased job that the workers keep. They
// decode no more than this, and nothing of a complete's reply, so that
// the test (under the race detector) leaves the CPU to the nodes.
type mnLeased struct {
	ID          int64      `json:"id"`
	Attempt     int        `json:"attempt"`
	LeaseToken  string     `json:"lease_token"`
	LeaseExpiry *time.Time `json:"lease_expires_at"`
}

// mnAccept is a completion the server accepted (200).
type mnAccept struct {
	token   string
	attempt int
	node    string
	at      time.Time // when the reply came, on the test's clock
}

// mnLedger records what the test's workers saw. It is safe for concurrent
// use.
type mnLedger struct {
	mu         sync.Mutex
	accepted   map[int64][]mnAccept // by job id; more than one is a double completion
	conflicts  map[int64]int        // 409 lease_lost on complete, by job id
	deliveries map[int64]int        // how often a lease handed the job out
	held       []mnLeased           // leased by the dead node's workers and never settled
	leaseErrs  []string             // lease calls that failed
	otherErrs  []string             // completes that failed otherwise than 200 or 409
	distinct   atomic.Int64         // job ids with an accepted completion
}

func newMNLedger() *mnLedger {
	return &mnLedger{accepted: map[int64][]mnAccept{}, conflicts: map[int64]int{}, deliveries: map[int64]int{}}
}

func (l *mnLedger) leased(jobs []mnLeased) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, j := range jobs {
		l.deliveries[j.ID]++
	}
}

func (l *mnLedger) hold(jobs []mnLeased) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = append(l.held, jobs...)
}

func (l *mnLedger) accept(id int64, a mnAccept) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.accepted[id]) == 0 {
		l.distinct.Add(1)
	}
	l.accepted[id] = append(l.accepted[id], a)
}

func (l *mnLedger) conflict(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.conflicts[id]++
}

func (l *mnLedger) failed(leasing bool, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if leasing {
		l.leaseErrs = append(l.leaseErrs, msg)
	} else {
		l.otherErrs = append(l.otherErrs, msg)
	}
}

// mnPost posts body (JSON) to node n's path and returns the status and
// the reply's body.
func mnPost(ctx context.Context, n *mnNode, path string, body []byte) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.base+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, raw, err
}

// mnWork is one worker on node n: it leases up to 20 jobs of queue at a
// time and completes each with its lease token, until ctx ends. Once dead
// is set (the node and its workers die), it stops without settling the
// jobs it holds and records them as held.
func mnWork(ctx context.Context, n *mnNode, name, queue string, dead *atomic.Bool, l *mnLedger) {
	req, err := json.Marshal(map[string]any{"queues": []string{queue}, "max": 20, "wait": "2s",
		"lease_for": mnLeaseFor.String(), "worker": name})
	if err != nil {
		panic(err)
	}
	isDead := func() bool { return dead != nil && dead.Load() }
	for ctx.Err() == nil && !isDead() {
		code, raw, err := mnPost(ctx, n, "/v1/lease", req)
		var out struct{ Jobs []mnLeased }
		if err == nil && code == http.StatusOK {
			err = json.Unmarshal(raw, &out)
		} else if err == nil {
			err = fmt.Errorf("status %d: %s", code, raw)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			l.failed(true, fmt.Sprintf("%s: lease: %v", name, err))
			mnSleep(ctx, 50*time.Millisecond)
			continue
		}
		l.leased(out.Jobs)
		for i, j := range out.Jobs {
			if isDead() {
				l.hold(out.Jobs[i:])
				return
			}
			mnComplete(ctx, n, name, j, l)
		}
	}
}

// mnComplete completes job j with its lease token, sending the same call
// again (which the API makes safe) after a transport error.
func mnComplete(ctx context.Context, n *mnNode, name string, j mnLeased, l *mnLedger) {
	path := "/v1/jobs/" + strconv.FormatInt(j.ID, 10) + "/complete"
	body := []byte(`{"lease_token":"` + j.LeaseToken + `"}`)
	for try := 1; ; try++ {
		code, raw, err := mnPost(ctx, n, path, body)
		var problem struct{ Code string }
		switch {
		case err == nil && code == http.StatusOK:
			l.accept(j.ID, mnAccept{token: j.LeaseToken, attempt: j.Attempt, node: n.id, at: time.Now()})
			return
		case err == nil && code == http.StatusConflict && json.Unmarshal(raw, &problem) == nil && problem.Code == "lease_lost":
			l.conflict(j.ID)
			return
		case err == nil, ctx.Err() != nil, try == 5:
			l.failed(false, fmt.Sprintf("%s: complete job %d (attempt %d): status %d %s, error %v", name, j.ID, j.Attempt, code, raw, err))
			return
		}
		mnSleep(ctx, 100*time.Millisecond)
	}
}

func mnSleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// mnEnqueue enqueues total jobs of queue in batches of batch, spread
// evenly over nodes (batch b goes to node b mod len(nodes)), each with a
// unique sequence number as its args {"seq": n}. It returns each job's
// sequence number by id.
func mnEnqueue(t *testing.T, nodes []*mnNode, queue string, total, batch int) map[int64]int {
	t.Helper()
	var (
		mu   sync.Mutex
		seqs = make(map[int64]int, total)
		errs []string
		wg   sync.WaitGroup
	)
	for k, n := range nodes {
		wg.Go(func() {
			for from := k * batch; from < total; from += len(nodes) * batch {
				reqs := make([]httpapi.EnqueueRequest, 0, batch)
				for seq := from; seq < min(from+batch, total); seq++ {
					reqs = append(reqs, httpapi.EnqueueRequest{Kind: "mn.work", Queue: queue,
						Args: json.RawMessage(`{"seq":` + strconv.Itoa(seq) + `}`)})
				}
				jobs, err := n.c.EnqueueBatch(t.Context(), reqs)
				mu.Lock()
				switch {
				case err != nil:
					errs = append(errs, fmt.Sprintf("node %s: batch from %d: %v", n.id, from, err))
				case len(jobs) != len(reqs):
					errs = append(errs, fmt.Sprintf("node %s: batch of %d enqueued %d", n.id, len(reqs), len(jobs)))
				}
				for i, j := range jobs {
					var args struct{ Seq int }
					if json.Unmarshal(j.Args, &args) != nil || args.Seq != from+i || j.State != "available" {
						errs = append(errs, fmt.Sprintf("node %s: enqueued job %d: state %s args %s, want available {\"seq\":%d}",
							n.id, j.ID, j.State, j.Args, from+i))
					}
					if _, dup := seqs[j.ID]; dup {
						errs = append(errs, fmt.Sprintf("job id %d given to two enqueued jobs", j.ID))
					}
					seqs[j.ID] = from + i
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("enqueue: %d problems, the first: %q", len(errs), errs[:min(len(errs), 5)])
	}
	if len(seqs) != total {
		t.Fatalf("enqueued %d distinct jobs, want %d", len(seqs), total)
	}
	return seqs
}

// mnListQueue returns every job of queue, listed through node n.
func mnListQueue(t *testing.T, n *mnNode, queue string) map[int64]httpapi.Job {
	t.Helper()
	out := map[int64]httpapi.Job{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatalf("listing queue %s: more than 1000 pages", queue)
		}
		page, err := n.c.ListJobs(t.Context(), restclient.ListParams{Queues: []string{queue}, Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatalf("list queue %s on node %s: %v", queue, n.id, err)
		}
		for _, j := range page.Jobs {
			if _, dup := out[j.ID]; dup {
				t.Errorf("job %d listed twice", j.ID)
			}
			out[j.ID] = j
		}
		if page.NextCursor == "" {
			return out
		}
		cursor = page.NextCursor
	}
}

// mnCounts returns the counts per state of queue, as node n reports them.
func mnCounts(t *testing.T, n *mnNode, queue string) map[string]int {
	t.Helper()
	qs, err := n.c.Queues(t.Context())
	if err != nil {
		t.Fatalf("GET /v1/queues on node %s: %v", n.id, err)
	}
	for _, q := range qs {
		if q.Name == queue {
			return q.Counts
		}
	}
	t.Fatalf("GET /v1/queues on node %s: no queue %s in %+v", n.id, queue, qs)
	return nil
}

// TestMultiNodeExactlyOnce runs three nodes on one schema, enqueues 30,000
// jobs (6,000 with -short) through all of them and works them with workers on every node.
// When a third is done, the leader node is killed (SIGKILL) together with
// its workers, which drop the jobs they hold. The workers on the other two
// nodes must finish everything: every job completed once and only once,
// none lost, and the dead workers' jobs re-delivered by the new leader
// after their leases expired.
func TestMultiNodeExactlyOnce(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	const (
		batch          = 500
		workersPerNode = 8
		queue          = "mn-once"
	)
	total := 30_000
	if testing.Short() {
		total = 6_000
	}
	began := time.Now()

	// All three at once on the empty schema: their migrations race.
	nodes := []*mnNode{mnStart(t, url, schema, "node-1"), mnStart(t, url, schema, "node-2"), mnStart(t, url, schema, "node-3")}
	for _, n := range nodes {
		waitReady(t, n.p, n.base)
	}
	// The node that dies is the leader: the harder case, where the
	// rescuer of its expired leases must first be elected elsewhere.
	victim := mnWaitOneLeader(t, nodes, mnFailoverDeadline)
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(n *mnNode) bool { return n == victim })
	ready := time.Since(began)

	seqs := mnEnqueue(t, nodes, queue, total, batch)
	enqueued := time.Since(began)

	ctx, cancel := context.WithCancel(t.Context())
	l := newMNLedger()
	var dead atomic.Bool
	var victimWG, survivorWG sync.WaitGroup
	t.Cleanup(func() { // before the nodes are killed
		cancel()
		victimWG.Wait()
		survivorWG.Wait()
	})
	for _, n := range nodes {
		for w := range workersPerNode {
			name := fmt.Sprintf("%s-w%d", n.id, w)
			if n == victim {
				victimWG.Go(func() { mnWork(ctx, n, name, queue, &dead, l) })
			} else {
				survivorWG.Go(func() { mnWork(ctx, n, name, queue, nil, l) })
			}
		}
	}

	// A third done: the victim's workers stop where they are, holding
	// their jobs, and the victim is killed.
	deadline := time.Now().Add(2 * time.Minute)
	for l.distinct.Load() < int64(total/3) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d jobs completed after 2m", l.distinct.Load(), total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	dead.Store(true)
	quiet := make(chan struct{})
	go func() { victimWG.Wait(); close(quiet) }()
	select {
	case <-quiet: // each finished the one call it had in flight
	case <-time.After(30 * time.Second):
		t.Fatalf("the workers of %s did not stop within 30s", victim.id)
	}
	killAt := time.Now()
	if err := victim.p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", victim.id, err)
	}
	<-victim.p.done
	atKill := l.distinct.Load()
	l.mu.Lock()
	held := slices.Clone(l.held)
	l.mu.Unlock()
	if len(held) == 0 {
		t.Errorf("the workers of %s held no jobs when it was killed: nothing to re-deliver", victim.id)
	}
	for _, j := range held {
		if j.LeaseExpiry == nil || j.LeaseToken == "" || j.Attempt < 1 {
			t.Fatalf("held job %d came without its lease: %+v", j.ID, j)
		}
	}

	// The survivors drain the rest; meanwhile one of them must take the
	// lead, and never both.
	var newLeader *mnNode
	var failover time.Duration
	deadline = time.Now().Add(2 * time.Minute)
	for l.distinct.Load() < int64(total) || newLeader == nil {
		p := mnPollLeaders(t.Context(), survivors)
		if len(p.leaders) > 1 {
			t.Errorf("both survivors report drover_leader 1 at once: %v", p)
		}
		if len(p.leaders) == 1 && newLeader == nil {
			newLeader, failover = p.leaders[0], time.Since(killAt)
		}
		if time.Now().After(deadline) {
			missing := []int64{}
			l.mu.Lock()
			for id := range seqs {
				if len(l.accepted[id]) == 0 && len(missing) < 10 {
					missing = append(missing, id)
				}
			}
			l.mu.Unlock()
			states := map[int64]string{}
			for _, id := range missing {
				if j, err := survivors[0].c.GetJob(t.Context(), id); err == nil {
					states[id] = fmt.Sprintf("%s attempt %d", j.State, j.Attempt)
				}
			}
			t.Fatalf("2m after the kill: %d of %d jobs completed, new leader %v (last poll %v), counts %v; some not completed: %v",
				l.distinct.Load(), total, newLeader != nil, p, mnCounts(t, survivors[0], queue), states)
		}
		time.Sleep(250 * time.Millisecond)
	}
	drained := time.Since(killAt)
	cancel()
	survivorWG.Wait()

	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("leader %s killed at %d/%d completed, holding %d jobs; %s took the lead %s after the kill; "+
		"%d complete calls got 409, %d lease calls failed",
		victim.id, atKill, total, len(held), newLeader.id, failover.Round(time.Millisecond), len(l.conflicts), len(l.leaseErrs))
	t.Logf("timings: 3 nodes ready and elected %s, enqueued %d at %s, kill at %s, drained %s after the kill, total %s",
		ready.Round(time.Millisecond), total, enqueued.Round(time.Millisecond), killAt.Sub(began).Round(time.Millisecond),
		drained.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))

	// Exactly once, from the workers' side: each job had one accepted
	// completion, and nothing else was accepted.
	if len(l.otherErrs) > 0 {
		t.Errorf("%d complete calls failed otherwise than 200 or 409, the first: %q", len(l.otherErrs), l.otherErrs[:min(5, len(l.otherErrs))])
	}
	if len(l.leaseErrs) > 0 {
		t.Logf("lease calls that failed (%d), the first: %q", len(l.leaseErrs), l.leaseErrs[:min(5, len(l.leaseErrs))])
	}
	twice := 0
	for id, as := range l.accepted {
		if _, ok := seqs[id]; !ok {
			t.Errorf("a completion of job %d, which the test did not enqueue, was accepted", id)
		}
		if len(as) > 1 {
			if twice++; twice <= 5 {
				t.Errorf("job %d was completed %d times: %+v", id, len(as), as)
			}
		}
	}
	if twice > 0 {
		t.Errorf("%d jobs were completed more than once", twice)
	}
	lost := 0
	for id := range seqs {
		if len(l.accepted[id]) == 0 {
			if lost++; lost <= 5 {
				t.Errorf("job %d never had a completion accepted", id)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%d jobs were lost", lost)
	}

	// Exactly once, from the server's side, through each survivor.
	for _, n := range survivors {
		c := mnCounts(t, n, queue)
		for state, k := range c {
			want := 0
			if state == "completed" {
				want = total
			}
			if k != want {
				t.Errorf("node %s: queue %s has %d %s jobs, want %d (counts %v)", n.id, queue, k, state, want, c)
			}
		}
	}
	jobs := mnListQueue(t, survivors[0], queue)
	if len(jobs) != total {
		t.Errorf("queue %s lists %d jobs, want %d", queue, len(jobs), total)
	}
	bad := 0
	for id, j := range jobs {
		var args struct{ Seq int }
		_ = json.Unmarshal(j.Args, &args)
		problem := ""
		switch seq, ok := seqs[id]; {
		case !ok || args.Seq != seq:
			problem = fmt.Sprintf("args %s, enqueued with seq %d", j.Args, seq)
		case j.State != "completed":
			problem = "state " + j.State
		case len(j.Errors) != j.Attempt-1:
			problem = fmt.Sprintf("attempt %d with %d errors, want one error per attempt before the last", j.Attempt, len(j.Errors))
		case len(l.leaseErrs) == 0 && l.deliveries[id] != j.Attempt:
			// Every attempt the server started went to a worker of the test.
			problem = fmt.Sprintf("attempt %d, but leased %d times", j.Attempt, l.deliveries[id])
		}
		for _, e := range j.Errors {
			if problem == "" && e.Message != mnLeaseExpired {
				problem = fmt.Sprintf("error %+v, want only lease expiries", e)
			}
		}
		if as := l.accepted[id]; problem == "" && len(as) == 1 && as[0].attempt != j.Attempt {
			problem = fmt.Sprintf("completed on attempt %d, but the accepted completion was of attempt %d", j.Attempt, as[0].attempt)
		}
		if problem != "" {
			if bad++; bad <= 10 {
				t.Errorf("job %d: %s", id, problem)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d jobs are wrong", bad, len(jobs))
	}

	// The dead workers' jobs were taken back by the new leader once their
	// leases had expired, and done again on a surviving node.
	rescued := map[int64]string{}
	for _, n := range survivors {
		stderr := n.p.stderr.String()
		if !mnLogged(stderr, mnGainedLog) {
			continue
		}
		for id := range mnRescuedIDs(stderr) {
			rescued[id] = n.id
		}
	}
	for _, h := range held {
		j, as := jobs[h.ID], l.accepted[h.ID]
		var rescue *httpapi.AttemptError
		for i := range j.Errors {
			if j.Errors[i].Attempt == h.Attempt {
				rescue = &j.Errors[i]
			}
		}
		switch {
		case len(as) != 1:
			t.Errorf("held job %d: %d accepted completions, want 1", h.ID, len(as))
		case j.State != "completed" || j.Attempt <= h.Attempt:
			t.Errorf("held job %d (attempt %d on %s): now %s on attempt %d, want completed on a later attempt",
				h.ID, h.Attempt, victim.id, j.State, j.Attempt)
		case rescue == nil || rescue.Message != mnLeaseExpired:
			t.Errorf("held job %d: errors %+v, want %q for attempt %d", h.ID, j.Errors, mnLeaseExpired, h.Attempt)
		case rescue.At.Before(*h.LeaseExpiry):
			t.Errorf("held job %d was taken back at %s, before its lease expired at %s", h.ID, rescue.At, h.LeaseExpiry)
		case j.FinalizedAt == nil || j.FinalizedAt.Before(rescue.At):
			t.Errorf("held job %d: finalized at %v, before it was taken back at %s", h.ID, j.FinalizedAt, rescue.At)
		case as[0].node == victim.id || as[0].at.Before(killAt):
			t.Errorf("held job %d: completed through %s at %s, want a survivor after the kill at %s", h.ID, as[0].node, as[0].at, killAt)
		case rescued[h.ID] == "":
			t.Errorf("held job %d: no elected survivor logged %q for it", h.ID, mnRescueLog)
		}
	}

	for _, n := range survivors {
		stop(t, n.p)
	}
}

// TestMultiNodeLeaderFailover checks the election through drover_leader
// on /metrics: one leader among three nodes, another one soon after the
// leader is killed, and the last one at once when that one stops
// gracefully (it resigns); never two at once. Scheduled jobs becoming
// available after each takeover show that maintenance moved with the lead.
func TestMultiNodeLeaderFailover(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	const queue = "mn-failover"
	began := time.Now()

	// One node migrates the schema, then two more join it.
	nodes := []*mnNode{mnStart(t, url, schema, "node-1")}
	waitReady(t, nodes[0].p, nodes[0].base)
	nodes = append(nodes, mnStart(t, url, schema, "node-2"), mnStart(t, url, schema, "node-3"))
	for _, n := range nodes[1:] {
		waitReady(t, n.p, n.base)
	}
	first := mnWaitOneLeader(t, nodes, mnFailoverDeadline)
	survivors := slices.DeleteFunc(slices.Clone(nodes), func(n *mnNode) bool { return n == first })
	t.Logf("%s leads, %s after the start", first.id, time.Since(began).Round(time.Millisecond))

	// A job due in 2s, enqueued through a follower; then the leader dies
	// before it is due, so that only its successor can promote it.
	runAt := time.Now().Add(2 * time.Second)
	j1, err := survivors[0].c.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "mn.later", Queue: queue, RunAt: &runAt})
	if err != nil || j1.State != "scheduled" {
		t.Fatalf("enqueue a job for in 2s: %+v, %v; want it scheduled", j1, err)
	}
	killAt := time.Now()
	if err := first.p.cmd.Process.Kill(); err != nil {
		t.Fatalf("SIGKILL %s: %v", first.id, err)
	}
	<-first.p.done
	if !killAt.Before(runAt) {
		t.Logf("the kill came after the job was due: the promotion check below proves less")
	}

	// Poll: the job's state first, then the survivors' gauges, so that a
	// job promoted by a leader is always seen with that leader.
	var second *mnNode
	sawDue := false // the job still scheduled, a second after it was due
	deadline := killAt.Add(mnFailoverDeadline)
	for second == nil {
		j, err := survivors[0].c.GetJob(t.Context(), j1.ID)
		if err != nil {
			t.Fatalf("GET job %d: %v", j1.ID, err)
		}
		p := mnPollLeaders(t.Context(), survivors)
		leaderless := len(p.leaders) == 0 && len(p.errs) == 0
		switch {
		case len(p.leaders) > 1:
			t.Fatalf("both survivors report drover_leader 1 at once: %v", p)
		case len(p.leaders) == 1 && len(p.errs) == 0:
			second = p.leaders[0]
		case leaderless && j.State != "scheduled" && killAt.Before(runAt):
			t.Fatalf("job %d became %s while no node led (%v): maintenance ran without the lead", j1.ID, j.State, p)
		case leaderless && time.Now().After(runAt.Add(time.Second)):
			sawDue = true
		}
		if second == nil && time.Now().After(deadline) {
			t.Fatalf("no survivor took the lead within %s of the kill; last poll: %v", mnFailoverDeadline, p)
		}
		time.Sleep(200 * time.Millisecond)
	}
	failover := time.Since(killAt)
	last := survivors[0]
	if last == second {
		last = survivors[1]
	}
	t.Logf("%s took the lead %s after %s was killed", second.id, failover.Round(time.Millisecond), first.id)
	if !sawDue && killAt.Before(runAt) {
		t.Logf("the takeover came less than a second after the job was due: whether it waited for a leader is not shown")
	}
	// The successor promotes the job; a worker on the other node leases it.
	mnLeaseOne(t, last, queue, j1.ID, 15*time.Second)

	// A graceful stop resigns the lead: the last node takes it at its next
	// try, long before the term would have run out.
	runAt = time.Now().Add(time.Second)
	j2, err := last.c.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "mn.later", Queue: queue, RunAt: &runAt})
	if err != nil || j2.State != "scheduled" {
		t.Fatalf("enqueue a job for in 1s: %+v, %v; want it scheduled", j2, err)
	}
	termAt := time.Now()
	stop(t, second.p)
	exited := time.Since(termAt)
	if !mnLogged(second.p.stderr.String(), "leader: resigned") {
		t.Errorf("%s stopped without logging %q", second.id, "leader: resigned")
	}
	for {
		v, err := mnLeaderMetric(t.Context(), last)
		if err == nil && v == 1 {
			break
		}
		if time.Since(termAt) > mnHandoverDeadline {
			t.Fatalf("%s did not take the lead within %s of the SIGTERM to %s (which exited after %s); last reading %d, %v",
				last.id, mnHandoverDeadline, second.id, exited.Round(time.Millisecond), v, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%s took the lead %s after the SIGTERM to %s (which exited after %s)",
		last.id, time.Since(termAt).Round(time.Millisecond), second.id, exited.Round(time.Millisecond))
	mnLeaseOne(t, last, queue, j2.ID, 15*time.Second)

	stop(t, last.p)
	t.Logf("total %s", time.Since(began).Round(time.Millisecond))
}

// mnLeaseOne waits up to d for job id to become available, then leases it
// through node n and completes it.
func mnLeaseOne(t *testing.T, n *mnNode, queue string, id int64, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		j, err := n.c.GetJob(t.Context(), id)
		if err != nil {
			t.Fatalf("GET job %d on %s: %v", id, n.id, err)
		}
		if j.State == "available" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %d is still %s after %s of waiting (scheduled_at %s): the leader %s did not promote it",
				id, j.State, d, j.ScheduledAt, n.id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	wait := httpapi.Duration(5 * time.Second)
	jobs, err := n.c.Lease(t.Context(), restclient.LeaseRequest{Queues: []string{queue}, Max: 10, Wait: &wait, Worker: n.id + "-w"})
	if err != nil || len(jobs) != 1 || jobs[0].ID != id {
		t.Fatalf("lease on %s: %+v, %v; want job %d alone", n.id, jobs, err, id)
	}
	if _, err := n.c.Complete(t.Context(), id, jobs[0].LeaseToken, nil); err != nil {
		t.Fatalf("complete job %d on %s: %v", id, n.id, err)
	}
}
