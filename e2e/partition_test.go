package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/testenv/faultproxy"
)

// The partition tests put a fault-injecting TCP proxy
// (internal/testenv/faultproxy) between a worker or producer and a real
// `drover serve`, on the embedded store and on PostgreSQL, and check the
// promises that make retries safe: a worker cut off past its lease cannot
// settle the job any more; a completion whose answer was lost can be sent
// again and succeeds once; an enqueue whose answer was lost, sent again
// with its Idempotency-Key, makes one job.

const (
	// ptRescueDeadline bounds how long a second worker waits for a job
	// whose 1s lease expired: the rescuer looks every second; the rest is
	// room for a slow machine.
	ptRescueDeadline = 60 * time.Second
	// ptCutOff is how long a partitioned call waits before the worker
	// gives up on it.
	ptCutOff = 2 * time.Second
)

// ptServer is a drover serve process, its address and its store.
type ptServer struct {
	base string // http://host:port
	addr string // host:port
	p    *proc
	// storeArgs name the store for other drover commands, and env holds
	// the database URL on PostgreSQL.
	storeArgs []string
	env       []string
	dataDir   string // embedded store
	dbURL     string // PostgreSQL
	schema    string
}

// ptStore makes a fresh store on backend ("embedded" or "postgres") for
// drover serve and the other commands; nothing runs yet.
func ptStore(t *testing.T, backend string) *ptServer {
	t.Helper()
	s := &ptServer{}
	switch backend {
	case "embedded":
		s.dataDir = t.TempDir()
		s.storeArgs = []string{"--data-dir", s.dataDir}
	case "postgres":
		s.dbURL = pgtest.TestURL(t)
		s.schema = pgtest.TestSchema(t, s.dbURL)
		// The URL goes in the environment, where ps does not show it.
		s.env = []string{"DROVER_DATABASE_URL=" + s.dbURL}
		s.storeArgs = []string{"--database-schema", s.schema}
	default:
		t.Fatalf("unknown backend %q", backend)
	}
	return s
}

// ptServe starts drover serve on a fresh store on backend and waits until
// it is ready and, on PostgreSQL, leads maintenance (so that its rescuer
// runs).
func ptServe(t *testing.T, backend string) *ptServer {
	t.Helper()
	s := ptStore(t, backend)
	s.serve(t)
	return s
}

// serve starts drover serve on s's store with the extra flags, and waits
// as ptServe says.
func (s *ptServer) serve(t *testing.T, extra ...string) {
	t.Helper()
	s.addr = freeAddr(t)
	s.base = "http://" + s.addr
	args := append([]string{"serve", "--addr", s.addr, "--log-format", "json", "--node-id", "pt-node"}, s.storeArgs...)
	p := start(t, s.env, append(args, extra...)...)
	s.p = p
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("drover serve (%s) stderr:\n%s", s.base, p.stderr.String())
		}
	})
	waitReady(t, s.p, s.base)
	backend := "embedded"
	if s.dbURL != "" {
		backend = "postgres"
	}
	if backend == "postgres" {
		n := &mnNode{id: "pt-node", base: s.base}
		deadline := time.After(mnFailoverDeadline)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			v, err := mnLeaderMetric(t.Context(), n)
			if err == nil && v == 1 {
				break
			}
			select {
			case <-deadline:
				t.Fatalf("the only node is not the leader after %s (last: %d, %v)", mnFailoverDeadline, v, err)
			case <-tick.C:
			}
		}
	}
}

// ptProxy starts a fault proxy in front of s.
func ptProxy(t *testing.T, s *ptServer) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// ptDirect is a client that reaches the server without the proxy.
var ptDirect = &http.Client{Timeout: 60 * time.Second}

// ptFresh returns a client that opens a new connection for each request,
// so that the transport never re-sends a request on its own: the tests
// decide every retry.
func ptFresh(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

// ptAnswer is a response: its status and raw body.
type ptAnswer struct {
	status int
	body   []byte
}

// decode decodes the body into out, failing the test if it is not JSON.
func (a ptAnswer) decode(t *testing.T, out any) {
	t.Helper()
	if err := json.Unmarshal(a.body, out); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
}

// code is the problem code of an error answer.
func (a ptAnswer) code() string {
	var p struct {
		Code string `json:"code"`
	}
	json.Unmarshal(a.body, &p) //nolint:errcheck // an empty code shows in the failure
	return p.Code
}

// ptCall sends a JSON request and returns the answer, or the error the
// client saw (a cut connection, a timeout).
func ptCall(ctx context.Context, hc *http.Client, method, url string, body any, header http.Header) (ptAnswer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return ptAnswer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return ptAnswer{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ptAnswer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ptAnswer{}, err
	}
	return ptAnswer{status: resp.StatusCode, body: b}, nil
}

// ptMust is ptCall that fails the test on a client error or an
// unexpected status.
func ptMust(t *testing.T, hc *http.Client, method, url string, body any, header http.Header, want int) ptAnswer {
	t.Helper()
	a, err := ptCall(t.Context(), hc, method, url, body, header)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	if a.status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, url, a.status, a.body, want)
	}
	return a
}

// ptLost checks that a call through a proxy dropping responses failed
// with a cut connection, not a timeout and not an answer.
func ptLost(t *testing.T, a ptAnswer, err error, what string) {
	t.Helper()
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("%s: the answer %d %s got through a proxy that drops answers", what, a.status, a.body)
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("%s: timed out (%v); want the connection cut at once", what, err)
	}
}

// ptDropped waits for the proxy's first dropped response and parses it:
// the answer the server gave and the client never saw.
func ptDropped(t *testing.T, p *faultproxy.Proxy) ptAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	got, err := p.WaitDropped(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got[0])), nil)
	if err != nil {
		t.Fatalf("the dropped response %q is not HTTP: %v", got[0], err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the dropped response's body: %v", err)
	}
	return ptAnswer{status: resp.StatusCode, body: b}
}

// ptJSONEqual fails the test unless a and b hold the same JSON value.
func ptJSONEqual(t *testing.T, what string, a, b []byte) {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatalf("%s: %s: %v", what, a, err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("%s: %s: %v", what, b, err)
	}
	if !reflect.DeepEqual(va, vb) {
		t.Fatalf("%s differ:\n%s\n%s", what, a, b)
	}
}

// ptQueueJobs lists every job of queue, directly.
func ptQueueJobs(t *testing.T, s *ptServer, queue string) []hwJob {
	t.Helper()
	a := ptMust(t, ptDirect, http.MethodGet, s.base+"/v1/jobs?limit=1000&queue="+queue, nil, nil, http.StatusOK)
	var page struct {
		Jobs []hwJob `json:"jobs"`
	}
	a.decode(t, &page)
	return page.Jobs
}

// ptLeased is the part of a leased job these tests use.
type ptLeased struct {
	ID         int64  `json:"id"`
	Attempt    int    `json:"attempt"`
	LeaseToken string `json:"lease_token"`
}

// ptLease leases at most one job of queue through hc, waiting up to wait.
func ptLease(t *testing.T, hc *http.Client, base, queue, worker, wait, leaseFor string) []ptLeased {
	t.Helper()
	a := ptMust(t, hc, http.MethodPost, base+"/v1/lease",
		map[string]any{"queues": []string{queue}, "wait": wait, "lease_for": leaseFor, "worker": worker}, nil, http.StatusOK)
	var out struct {
		Jobs []ptLeased `json:"jobs"`
	}
	a.decode(t, &out)
	return out.Jobs
}

func TestPartitions(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"embedded", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			s := ptServe(t, backend)
			t.Run("late completion after the lease expired is refused", func(t *testing.T) {
				t.Parallel()
				ptLateCompletionRefused(t, s)
			})
			t.Run("completion whose answer was lost is retried and succeeds once", func(t *testing.T) {
				t.Parallel()
				ptLostCompletion(t, s)
			})
			t.Run("enqueue whose answer was lost is retried with its key", func(t *testing.T) {
				t.Parallel()
				ptLostEnqueue(t, s, false)
			})
			t.Run("batch enqueue whose answer was lost is retried with its key", func(t *testing.T) {
				t.Parallel()
				ptLostEnqueue(t, s, true)
			})
		})
	}
}

// ptLateCompletionRefused: worker A leases a job with a 1s lease through
// the proxy, then the proxy cuts A off (blackhole) past the lease's end.
// The rescuer re-delivers the job, worker B (connected directly) leases
// and completes it. When the partition heals, A's late complete,
// heartbeat and fail are refused with 409 lease_lost, and the job keeps
// B's result.
func ptLateCompletionRefused(t *testing.T, s *ptServer) {
	const queue = "pt-late"
	proxy := ptProxy(t, s)
	enq := ptMust(t, ptDirect, http.MethodPost, s.base+"/v1/jobs", map[string]any{"kind": "pt", "queue": queue, "args": map[string]int{"n": 1}}, nil, http.StatusCreated)
	var created hwJob
	enq.decode(t, &created)

	// A keeps its connection alive, as a worker does.
	workerA := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(workerA.CloseIdleConnections)
	got := ptLease(t, workerA, proxy.URL(), queue, "A", "5s", "1s")
	if len(got) != 1 || got[0].ID != created.ID || got[0].Attempt != 1 {
		t.Fatalf("A leased %+v, want job %d at attempt 1", got, created.ID)
	}
	a := got[0]

	proxy.SetMode(faultproxy.Blackhole)
	// A's heartbeat never reaches the server: A is cut off.
	cut := &http.Client{Timeout: ptCutOff, Transport: workerA.Transport}
	if ans, err := ptCall(t.Context(), cut, http.MethodPost, fmt.Sprintf("%s/v1/jobs/%d/heartbeat", proxy.URL(), a.ID),
		map[string]any{"lease_token": a.LeaseToken, "lease_for": "30s"}, nil); err == nil {
		t.Fatalf("A's heartbeat got through the partition: %d %s", ans.status, ans.body)
	}

	// B, connected directly, gets the job once its lease has expired and
	// the rescuer has put it back.
	var b ptLeased
	deadline := time.Now().Add(ptRescueDeadline)
	for b.ID == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no worker got job %d back within %s of its 1s lease", a.ID, ptRescueDeadline)
		}
		if jobs := ptLease(t, ptDirect, s.base, queue, "B", "10s", "30s"); len(jobs) == 1 {
			b = jobs[0]
		}
	}
	if b.ID != a.ID || b.Attempt != 2 || b.LeaseToken == a.LeaseToken {
		t.Fatalf("B leased %+v, want job %d at attempt 2 with a new lease token", b, a.ID)
	}
	ptMust(t, ptDirect, http.MethodPost, fmt.Sprintf("%s/v1/jobs/%d/complete", s.base, b.ID),
		map[string]any{"lease_token": b.LeaseToken, "output": map[string]string{"by": "B"}}, nil, http.StatusOK)

	// The partition heals; A comes back with its stale lease.
	proxy.SetMode(faultproxy.Pass)
	for _, call := range []struct {
		verb string
		body map[string]any
	}{
		{"complete", map[string]any{"lease_token": a.LeaseToken, "output": map[string]string{"by": "A"}}},
		{"heartbeat", map[string]any{"lease_token": a.LeaseToken}},
		{"fail", map[string]any{"lease_token": a.LeaseToken, "error": "late"}},
	} {
		ans, err := ptCall(t.Context(), workerA, http.MethodPost, fmt.Sprintf("%s/v1/jobs/%d/%s", proxy.URL(), a.ID, call.verb), call.body, nil)
		if err != nil {
			t.Fatalf("A's late %s after the partition healed: %v", call.verb, err)
		}
		if ans.status != http.StatusConflict || ans.code() != "lease_lost" {
			t.Fatalf("A's late %s: %d %s, want 409 lease_lost", call.verb, ans.status, ans.body)
		}
	}

	final := ptMust(t, ptDirect, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", s.base, a.ID), nil, nil, http.StatusOK)
	var j hwJob
	final.decode(t, &j)
	if j.State != "completed" || j.Attempt != 2 || string(j.Output) != `{"by":"B"}` {
		t.Fatalf("final job: state %s, attempt %d, output %s; want completed by B at attempt 2", j.State, j.Attempt, j.Output)
	}
	if len(j.Errors) != 1 || j.Errors[0].Attempt != 1 || j.Errors[0].Message != mnLeaseExpired {
		t.Fatalf("final job's errors %+v, want one: attempt 1, %q", j.Errors, mnLeaseExpired)
	}
	if n := len(ptQueueJobs(t, s, queue)); n != 1 {
		t.Fatalf("queue %s holds %d jobs, want 1", queue, n)
	}
}

// ptLostCompletion: a worker's complete reaches the server and is
// applied, but the answer is lost (the proxy cuts the connection as the
// answer starts). The worker sends the same complete again with the same
// token: it succeeds with the first result, and the job was completed once.
func ptLostCompletion(t *testing.T, s *ptServer) {
	const queue = "pt-lost-complete"
	proxy := ptProxy(t, s)
	ptMust(t, ptDirect, http.MethodPost, s.base+"/v1/jobs", map[string]any{"kind": "pt", "queue": queue}, nil, http.StatusCreated)
	worker := ptFresh(30 * time.Second)
	got := ptLease(t, worker, proxy.URL(), queue, "W", "5s", "30s")
	if len(got) != 1 {
		t.Fatalf("leased %+v, want one job", got)
	}
	l := got[0]
	url := fmt.Sprintf("%s/v1/jobs/%d/complete", proxy.URL(), l.ID)
	body := map[string]any{"lease_token": l.LeaseToken, "output": map[string]int{"rows": 42}}

	proxy.SetMode(faultproxy.DropResponses)
	ans, err := ptCall(t.Context(), worker, http.MethodPost, url, body, nil)
	ptLost(t, ans, err, "complete")
	first := ptDropped(t, proxy)
	if first.status != http.StatusOK {
		t.Fatalf("the lost answer was %d %s, want 200", first.status, first.body)
	}
	var applied hwJob
	ptMust(t, ptDirect, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", s.base, l.ID), nil, nil, http.StatusOK).decode(t, &applied)
	if applied.State != "completed" {
		t.Fatalf("after the lost answer the job is %s; the server should have applied the complete", applied.State)
	}

	proxy.SetMode(faultproxy.Pass)
	again := ptMust(t, worker, http.MethodPost, url, body, nil, http.StatusOK)
	ptJSONEqual(t, "the retried complete's answer and the lost one", first.body, again.body)
	// A retry that disagrees with the first (another output) still gets
	// the first result and changes nothing.
	other := ptMust(t, worker, http.MethodPost, url, map[string]any{"lease_token": l.LeaseToken, "output": "other"}, nil, http.StatusOK)
	ptJSONEqual(t, "a differing repeat's answer and the lost one", first.body, other.body)

	var j struct {
		hwJob
		FinalizedAt string `json:"finalized_at"`
	}
	ptMust(t, ptDirect, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", s.base, l.ID), nil, nil, http.StatusOK).decode(t, &j)
	var f struct {
		FinalizedAt string `json:"finalized_at"`
	}
	json.Unmarshal(first.body, &f) //nolint:errcheck // compared below
	if j.State != "completed" || j.Attempt != 1 || len(j.Errors) != 0 || string(j.Output) != `{"rows":42}` || j.FinalizedAt != f.FinalizedAt {
		t.Fatalf("final job %+v finalized at %s; want completed once at attempt 1, finalized at %s, no errors", j.hwJob, j.FinalizedAt, f.FinalizedAt)
	}
	if n := len(ptQueueJobs(t, s, queue)); n != 1 {
		t.Fatalf("queue %s holds %d jobs, want 1", queue, n)
	}
}

// ptLostEnqueue: an enqueue (or a batch of three) reaches the server and
// is stored, but its answer is lost. Sent again with the same
// Idempotency-Key, it answers as the first did and stores nothing more.
// The same loss without a key stores the job twice: the key is what makes
// the retry safe.
func ptLostEnqueue(t *testing.T, s *ptServer, batch bool) {
	queue, path, want := "pt-lost-enqueue", "/v1/jobs", 1
	var body any = map[string]any{"kind": "pt", "queue": queue, "args": map[string]string{"order": "7"}}
	if batch {
		queue, path, want = "pt-lost-batch", "/v1/jobs/batch", 3
		jobs := make([]map[string]any, want)
		for i := range jobs {
			jobs[i] = map[string]any{"kind": "pt", "queue": queue, "args": map[string]int{"i": i}}
		}
		body = map[string]any{"jobs": jobs}
	}
	proxy := ptProxy(t, s)
	producer := ptFresh(30 * time.Second)
	key := http.Header{"Idempotency-Key": []string{"order-7-" + queue}}

	proxy.SetMode(faultproxy.DropResponses)
	ans, err := ptCall(t.Context(), producer, http.MethodPost, proxy.URL()+path, body, key)
	ptLost(t, ans, err, "enqueue")
	first := ptDropped(t, proxy)
	if first.status != http.StatusCreated {
		t.Fatalf("the lost answer was %d %s, want 201", first.status, first.body)
	}
	if n := len(ptQueueJobs(t, s, queue)); n != want {
		t.Fatalf("after the lost answer queue %s holds %d jobs, want %d: the server should have stored them", queue, n, want)
	}

	proxy.SetMode(faultproxy.Pass)
	again := ptMust(t, producer, http.MethodPost, proxy.URL()+path, body, key, http.StatusCreated)
	ptJSONEqual(t, "the retried enqueue's answer and the lost one", first.body, again.body)
	if n := len(ptQueueJobs(t, s, queue)); n != want {
		t.Fatalf("after the retry queue %s holds %d jobs, want %d", queue, n, want)
	}

	if batch {
		return
	}
	// Without a key the server cannot tell a retry from a new request.
	proxy.SetMode(faultproxy.DropResponses)
	ans, err = ptCall(t.Context(), producer, http.MethodPost, proxy.URL()+path, body, nil)
	ptLost(t, ans, err, "enqueue without a key")
	proxy.SetMode(faultproxy.Pass)
	ptMust(t, producer, http.MethodPost, proxy.URL()+path, body, nil, http.StatusCreated)
	if n := len(ptQueueJobs(t, s, queue)); n != want+2 {
		t.Fatalf("without a key, a lost answer and its retry stored %d jobs, want 2 more than %d", n, want)
	}
	if !strings.Contains(string(first.body), `"queue":"`+queue+`"`) {
		t.Fatalf("the lost answer %s does not describe the job", first.body)
	}
}
