//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The overload tests start the real server and measure it, so they run
// alone (not in parallel with each other or with the package's parallel
// tests): the figures they print are the machine's, not a neighbour's.
// DROVER_OVERLOAD_LONG=1 runs the long mode (longer levels, more slow
// connections); the default is the quick mode that CI runs on every push.

// olLongEnv selects the long mode.
const olLongEnv = "DROVER_OVERLOAD_LONG"

// olPlan sizes one mode of the overload tests.
type olPlan struct {
	name         string
	measure      time.Duration // closed-loop measurement of the sustainable rate
	measureConns int           // its concurrent producers
	level        time.Duration // each open-loop level
	levels       []int         // multiples of the sustainable rate
	memoryLimit  string        // --memory-limit of the overloaded server
	memoryCap    int64         // the same in bytes: VmHWM must stay under it
	waiters      int           // idle long-poll leases
	slow         int           // slowloris connections
	trickle      time.Duration // how often each sends a byte of its headers
	slowFor      time.Duration // how long the normal client runs beside them
}

func olPlanFor() olPlan {
	p := olPlan{
		name: "quick", measure: 3 * time.Second, measureConns: 16,
		level: 3 * time.Second, levels: []int{2, 5, 10},
		memoryLimit: "256MiB", memoryCap: 256 << 20,
		waiters: 10_000, slow: 1_000, trickle: 250 * time.Millisecond, slowFor: 6 * time.Second,
	}
	if os.Getenv(olLongEnv) == "1" {
		p.name = "long"
		p.measure, p.level = 10*time.Second, 20*time.Second
		// Twice the connections, each twice slower, for five times as long.
		p.slow, p.trickle, p.slowFor = 2_000, 500*time.Millisecond, 30*time.Second
	}
	return p
}

const (
	// olHang is how long any one request may take before the test calls
	// it a hang: far past every bound the server sets itself.
	olHang = 30 * time.Second
	// olClientConns is the generator's connections, each with one request
	// in flight at most; it is far above the server's --max-requests, so
	// the server, not the client, must shed the excess.
	olClientConns = 512
	// olMaxRequests is the overloaded server's --max-requests.
	olMaxRequests = 64
	// olP99Bound bounds the server's p99 of admitted requests at every
	// level (from its own latency histogram, so that the test's own
	// generator, slowed by the race detector on a shared 2-core machine,
	// does not count). With olMaxRequests in progress at a few hundred
	// per second, an admitted request waits a fraction of a second; a
	// server that queued the excess instead would answer later and later
	// through each level, since 10x the rate leaves 90% of it waiting.
	olP99Bound = 2500 * time.Millisecond
	// olRecoverWithin is how soon after the load a request must succeed.
	olRecoverWithin = 10 * time.Second
	// olNormalLatency bounds a request on an idle or recovered server
	// and the normal client's requests beside slow connections: a few
	// milliseconds is usual, and the rest is slack for a shared machine;
	// a server that let slow clients or a backlog hold requests up
	// would take seconds, or time out.
	olNormalLatency = 2 * time.Second
	// olWaiterBytes bounds the server's memory per idle long poll: its
	// connection's goroutine stack and buffers, the decoded request, the
	// handler's goroutine and the engine's waiter with its timers come to
	// about 28 KiB; twice that, rounded up, still catches a per-waiter
	// buffer or goroutine too many.
	olWaiterBytes = 64 << 10
	// olPark10k bounds parking the waiters, and waking them: usually
	// well under a minute, but the test's dials and readers crawl when
	// the machine is shared.
	olPark10k = 3 * time.Minute
	// olHeaderTimeout is the slowloris server's --read-header-timeout.
	olHeaderTimeout = 2 * time.Second
)

// olServe starts drover serve on a fresh data directory with extra flags
// and returns the process and its base URL.
func olServe(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	addr := freeAddr(t)
	all := append([]string{"serve", "--addr", addr, "--data-dir", t.TempDir(), "--log-format", "json", "--log-level", "warn"}, args...)
	srv := start(t, nil, all...)
	base := "http://" + addr
	waitReady(t, srv, base)
	return srv, base
}

// olStatus reads fields (such as VmRSS, VmHWM) of /proc/PID/status, in
// bytes.
func olStatus(t *testing.T, p *proc, fields ...string) []int64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the server's status: %v", err)
	}
	out := make([]int64, len(fields))
	for line := range strings.Lines(string(raw)) {
		name, val, ok := strings.Cut(line, ":")
		if i := slices.Index(fields, name); ok && i >= 0 {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parse %s line %q: %v", name, line, err)
			}
			out[i] = kb << 10
		}
	}
	for i, v := range out {
		if v == 0 {
			t.Fatalf("no %s in the server's /proc status", fields[i])
		}
	}
	return out
}

// olCPU returns the server's user plus system CPU time so far.
func olCPU(t *testing.T, p *proc) time.Duration {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the server's stat: %v", err)
	}
	// Fields after the command name (which may hold spaces) in ")".
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatalf("parse the server's stat: %v", err)
	}
	return time.Duration(utime+stime) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// olSum adds up the counts of a map.
func olSum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// olMiB formats bytes in MiB.
func olMiB(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// olQuantile returns the q-quantile of sorted durations.
func olQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// olTransport returns a transport that keeps up to n connections to the
// server, so that the generator does not pay a handshake per request.
func olTransport(n int) *http.Transport {
	return &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, IdleConnTimeout: time.Minute}
}

// olEnqueue posts one job and returns the status, the Retry-After header
// and the job's id (on 201).
func olEnqueue(ctx context.Context, c *http.Client, base, queue string, n int) (int, string, int64, error) {
	body := fmt.Sprintf(`{"kind":"overload","queue":%q,"args":{"n":%d}}`, queue, n)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/jobs", strings.NewReader(body))
	if err != nil {
		return 0, "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", 0, fmt.Errorf("read body: %w", err)
	}
	var j struct {
		ID int64 `json:"id"`
	}
	if resp.StatusCode == http.StatusCreated {
		if err := json.Unmarshal(raw, &j); err != nil || j.ID == 0 {
			return resp.StatusCode, "", 0, fmt.Errorf("201 without a job id: %s", raw)
		}
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), j.ID, nil
}

// olConn is one keep-alive connection of the load generator, speaking
// HTTP/1.1 by hand: far cheaper per request than net/http's transport,
// which matters because the tests run under the race detector on a small
// machine and the generator must outrun the server. It redials after an
// error. It is not safe for concurrent use.
type olConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
}

// enqueue posts one job of queue with args n and returns the status, the
// Retry-After header and the job's id (on 201).
func (o *olConn) enqueue(ctx context.Context, queue string, n int) (int, string, int64, error) {
	body := fmt.Sprintf(`{"kind":"overload","queue":%q,"args":{"n":%d}}`, queue, n)
	code, retry, raw, err := o.post(ctx, "/v1/jobs", []byte(body), false)
	if err != nil || code != http.StatusCreated {
		return code, retry, 0, err
	}
	var j struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal(raw, &j); err != nil || j.ID == 0 {
		return code, retry, 0, fmt.Errorf("201 without a job id: %s", raw)
	}
	return code, retry, j.ID, nil
}

// post sends a JSON body to path and returns the status, the Retry-After
// header and the response body. With expect, it sends
// "Expect: 100-continue" and the body only once the server asks for it,
// as clients of large uploads do, so that a refused request costs no
// upload.
func (o *olConn) post(ctx context.Context, path string, body []byte, expect bool) (int, string, []byte, error) {
	if o.c == nil {
		d := net.Dialer{Timeout: olHang}
		c, err := d.DialContext(ctx, "tcp", o.addr)
		if err != nil {
			return 0, "", nil, err
		}
		o.c, o.br = c, bufio.NewReaderSize(c, 4096)
	}
	head := fmt.Appendf(nil, "POST %s HTTP/1.1\r\nHost: drover\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, len(body))
	if expect {
		head = append(head, "Expect: 100-continue\r\n"...)
	}
	head = append(head, "\r\n"...)
	if !expect {
		head, body = append(head, body...), nil
	}
	code, retry, raw, closeConn, err := o.roundTrip(head, body)
	if err != nil || closeConn {
		o.close()
	}
	return code, retry, raw, err
}

func (o *olConn) close() {
	if o.c != nil {
		o.c.Close()
		o.c = nil
	}
}

// roundTrip writes head; then, when body is not nil, waits for
// 100 Continue before it writes body. It reads the final response.
func (o *olConn) roundTrip(head, body []byte) (code int, retry string, raw []byte, closeConn bool, err error) {
	if err := o.c.SetDeadline(time.Now().Add(olHang)); err != nil {
		return 0, "", nil, true, err
	}
	if _, err := o.c.Write(head); err != nil {
		return 0, "", nil, true, err
	}
	resp, err := http.ReadResponse(o.br, nil)
	if err != nil {
		return 0, "", nil, true, err
	}
	unsent := body != nil // the server answered without asking for it
	if body != nil && resp.StatusCode == http.StatusContinue {
		if _, err := o.c.Write(body); err != nil {
			// The server may have answered (408 when the upload was too
			// slow) and closed before the body was all sent: read it.
			if resp, rerr := http.ReadResponse(o.br, nil); rerr == nil {
				resp.Body.Close()
				return resp.StatusCode, resp.Header.Get("Retry-After"), nil, true, nil
			}
			return 0, "", nil, true, err
		}
		if resp, err = http.ReadResponse(o.br, nil); err != nil {
			return 0, "", nil, true, err
		}
		unsent = false
	}
	raw, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return resp.StatusCode, "", nil, true, fmt.Errorf("read body: %w", err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), raw, resp.Close || unsent, nil
}

// olLevel is the outcome of one open-loop level.
type olLevel struct {
	mult          int
	offered       float64 // requests per second asked for
	sent          int
	clientDropped int // due but not sent: every generator connection was busy
	codes         map[int]int
	noRetryAfter  int     // 429s without Retry-After
	errs          int     // transport errors
	firstErr      error   // the first of them
	admitted      []int64 // ids acknowledged with 201
	latencies     []time.Duration
	hwm           int64         // the server's VmHWM after the level
	serverP99     time.Duration // the server's own p99 of admitted requests
}

func (l *olLevel) share429() float64 {
	if l.sent == 0 {
		return 0
	}
	return float64(l.codes[http.StatusTooManyRequests]) / float64(l.sent)
}

// olOpenLoop sends enqueues at rate per second for d on schedule, whatever
// the answers: each due request goes to an idle connection of the
// generator's olClientConns, or, when all are busy waiting for answers, is
// counted as client-dropped. It returns when every request sent has been
// answered; a request that takes longer than olHang counts as an error.
func olOpenLoop(t *testing.T, addr, queue string, rate float64, d time.Duration) *olLevel {
	t.Helper()
	l := &olLevel{offered: rate, codes: map[int]int{}}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		tasks = make(chan int) // unbuffered: a send succeeds only when a connection is idle
	)
	for range olClientConns {
		wg.Go(func() {
			o := &olConn{addr: addr}
			defer o.close()
			for n := range tasks {
				sent := time.Now()
				code, retry, id, err := o.enqueue(t.Context(), queue, n)
				took := time.Since(sent)
				mu.Lock()
				switch {
				case err != nil:
					l.errs++
					if l.firstErr == nil {
						l.firstErr = err
					}
				case code == http.StatusCreated:
					l.codes[code]++
					l.admitted = append(l.admitted, id)
					l.latencies = append(l.latencies, took)
				case code == http.StatusTooManyRequests:
					l.codes[code]++
					if retry == "" {
						l.noRetryAfter++
					}
				default:
					l.codes[code]++
				}
				mu.Unlock()
			}
		})
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	due := 0
	for now := begin; now.Sub(begin) < d; now = <-tick.C {
		for target := int(rate * now.Sub(begin).Seconds()); due < target; due++ {
			select {
			case tasks <- due:
				l.sent++
			default:
				l.clientDropped++
			}
		}
	}
	close(tasks)
	wg.Wait()
	slices.Sort(l.latencies)
	return l
}

// olClosedLoop runs conns producers that each enqueue as fast as the
// server answers, for d, and returns the rate of 201s per second and the
// acknowledged ids.
func olClosedLoop(t *testing.T, addr, queue string, conns int, d time.Duration) (float64, []int64) {
	t.Helper()
	var (
		mu  sync.Mutex
		ids []int64
		wg  sync.WaitGroup
	)
	begin := time.Now()
	for w := range conns {
		wg.Go(func() {
			o := &olConn{addr: addr}
			defer o.close()
			for i := 0; time.Since(begin) < d; i++ {
				code, _, id, err := o.enqueue(t.Context(), queue, w*1_000_000+i)
				if err != nil || code != http.StatusCreated {
					t.Errorf("closed-loop enqueue: status %d, err %v", code, err)
					return
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return float64(len(ids)) / time.Since(begin).Seconds(), ids
}

const (
	// olBigConns send large batch enqueues at once: twice the server's
	// --max-requests, so that without a bound on request bytes in
	// progress the server would hold olMaxRequests large bodies at once.
	olBigConns = 2 * olMaxRequests
	// olBigJobs is the jobs per large batch, of about 1 KiB each.
	olBigJobs = 1000
)

// olBig is the outcome of the large-body phase.
type olBig struct {
	sent, errs   int
	firstErr     error
	codes        map[int]int
	reasons      map[string]int // the details of the 429s
	noRetryAfter int
	jobs         int // acknowledged in 201 answers
}

// olBigBodies sends batch enqueues of olBigJobs jobs (about 1 MiB each)
// into queue from olBigConns connections, each as fast as the server
// answers, for d.
func olBigBodies(t *testing.T, addr, queue string, d time.Duration) *olBig {
	t.Helper()
	var batch struct {
		Jobs []map[string]any `json:"jobs"`
	}
	for i := range olBigJobs {
		batch.Jobs = append(batch.Jobs, map[string]any{"kind": "big", "queue": queue,
			"args": map[string]any{"n": i, "pad": strings.Repeat("x", 900)}})
	}
	body, err := json.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	r := &olBig{codes: map[int]int{}, reasons: map[string]int{}}
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	begin := time.Now()
	for range olBigConns {
		wg.Go(func() {
			o := &olConn{addr: addr}
			defer o.close()
			for time.Since(begin) < d {
				code, retry, raw, err := o.post(t.Context(), "/v1/jobs/batch", body, true)
				var out struct {
					Jobs   []json.RawMessage `json:"jobs"`
					Detail string            `json:"detail"`
				}
				if err == nil {
					err = json.Unmarshal(raw, &out)
				}
				mu.Lock()
				r.sent++
				switch {
				case err != nil:
					r.errs++
					if r.firstErr == nil {
						r.firstErr = err
					}
				case code == http.StatusCreated:
					r.jobs += len(out.Jobs)
				case code == http.StatusTooManyRequests:
					r.reasons[out.Detail]++
					if retry == "" {
						r.noRetryAfter++
					}
				}
				if err == nil {
					r.codes[code]++
				}
				mu.Unlock()
				if code == http.StatusTooManyRequests {
					time.Sleep(10 * time.Millisecond) // a client's pause before it retries
				}
			}
		})
	}
	wg.Wait()
	return r
}

// olHist reads the server's histogram of the time it took to answer
// POST /v1/jobs requests that passed admission (a 429 is counted under
// another route): the cumulative count at each upper bound in seconds.
func olHist(t *testing.T, base string) map[float64]float64 {
	t.Helper()
	return olHistWith(t, hwClient, base)
}

// olHistWith is olHist through client c.
func olHistWith(t *testing.T, c *http.Client, base string) map[float64]float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d (%v)", resp.StatusCode, err)
	}
	h := map[float64]float64{}
	for line := range strings.Lines(string(raw)) {
		rest, ok := strings.CutPrefix(line, "drover_http_request_duration_seconds_bucket{")
		if !ok || !strings.Contains(rest, `route="POST /v1/jobs"`) {
			continue
		}
		_, le, _ := strings.Cut(rest, `le="`)
		le, count, _ := strings.Cut(le, `"} `)
		bound, err1 := strconv.ParseFloat(le, 64)
		n, err2 := strconv.ParseFloat(strings.TrimSpace(count), 64)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		h[bound] = n
	}
	return h
}

// olHistQuantile returns the q-quantile of the requests counted between
// two readings of olHist, interpolated within its bucket as Prometheus's
// histogram_quantile does.
func olHistQuantile(before, after map[float64]float64, q float64) time.Duration {
	bounds := slices.Sorted(maps.Keys(after))
	total := after[math.Inf(1)] - before[math.Inf(1)]
	if total == 0 {
		return 0
	}
	rank, lower, below := q*total, 0.0, 0.0
	for _, b := range bounds {
		n := after[b] - before[b]
		if n >= rank {
			if math.IsInf(b, 1) {
				return time.Duration(lower * float64(time.Second)) // past the last bound: its value
			}
			return time.Duration((lower + (b-lower)*(rank-below)/(n-below)) * float64(time.Second))
		}
		lower, below = b, n
	}
	return 0
}

// olStoredIDs lists every job of queue and returns their ids.
func olStoredIDs(t *testing.T, base, queue string) map[int64]bool {
	t.Helper()
	ids := map[int64]bool{}
	cursor := ""
	for {
		var page struct {
			Jobs []struct {
				ID int64 `json:"id"`
			} `json:"jobs"`
			NextCursor string `json:"next_cursor"`
		}
		hwCallJSON(t, http.MethodGet, base+"/v1/jobs?limit=1000&queue="+url.QueryEscape(queue)+"&cursor="+url.QueryEscape(cursor), nil, http.StatusOK, &page)
		for _, j := range page.Jobs {
			ids[j.ID] = true
		}
		if page.NextCursor == "" {
			return ids
		}
		cursor = page.NextCursor
	}
}

// TestOverloadOpenLoop measures the sustainable enqueue rate closed-loop,
// then offers 2x, 5x and 10x that rate open-loop to a server with a
// memory limit, then sends 1 MiB batches from twice --max-requests
// connections. It checks that every answer is 201 or 429 with Retry-After
// (no 5xx, no transport error, no hang), that the admitted requests' p99
// stays bounded, that the server's peak RSS stays under its memory limit,
// that every acknowledged job is stored, and that a normal request
// succeeds promptly within olRecoverWithin of the load's end.
//
//nolint:paralleltest // measures the machine: runs alone
func TestOverloadOpenLoop(t *testing.T) {
	plan := olPlanFor()
	srv, base := olServe(t, "--max-requests", strconv.Itoa(olMaxRequests), "--memory-limit", plan.memoryLimit)
	addr := strings.TrimPrefix(base, "http://")
	rate, acked := olClosedLoop(t, addr, "overload", plan.measureConns, plan.measure)
	if t.Failed() {
		t.FailNow()
	}
	if rate < 10 {
		t.Fatalf("sustainable rate %.0f/s: the server barely answers", rate)
	}
	var levels []*olLevel
	for _, mult := range plan.levels {
		h0 := olHist(t, base)
		l := olOpenLoop(t, addr, "overload", rate*float64(mult), plan.level)
		l.mult = mult
		l.serverP99 = olHistQuantile(h0, olHist(t, base), 0.99)
		l.hwm = olStatus(t, srv, "VmHWM")[0]
		levels = append(levels, l)
		acked = append(acked, l.admitted...)
	}
	big := olBigBodies(t, addr, "big", plan.level)
	bigHWM := olStatus(t, srv, "VmHWM")[0]
	loadEnd := time.Now()

	// Recovery: the first enqueue that succeeds, then a few more, each
	// within olNormalLatency.
	probe := &http.Client{Timeout: olNormalLatency, Transport: olTransport(1)}
	defer probe.CloseIdleConnections()
	var recovered time.Duration
	probeErrs := 0 // probes without an answer: their job may exist
	for n := 0; ; n++ {
		code, _, id, err := olEnqueue(t.Context(), probe, base, "overload", -1-n)
		if err != nil {
			probeErrs++
		}
		if err == nil && code == http.StatusCreated {
			recovered = time.Since(loadEnd)
			acked = append(acked, id)
			break
		}
		if time.Since(loadEnd) > olRecoverWithin {
			t.Fatalf("no enqueue succeeded within %s of the load's end (last: status %d, err %v)", olRecoverWithin, code, err)
		}
		time.Sleep(50 * time.Millisecond) // a client's pause between retries
	}
	var after []time.Duration
	for n := range 20 {
		sent := time.Now()
		code, _, id, err := olEnqueue(t.Context(), probe, base, "overload", -100-n)
		if err != nil || code != http.StatusCreated {
			t.Fatalf("enqueue after recovery: status %d, err %v", code, err)
		}
		after = append(after, time.Since(sent))
		acked = append(acked, id)
	}
	slices.Sort(after)

	// Nothing acknowledged is lost, nothing unacknowledged appears.
	stored := olStoredIDs(t, base, "overload")
	missing := 0
	for _, id := range acked {
		if !stored[id] {
			missing++
		}
	}
	unexplained := probeErrs
	for _, l := range levels {
		unexplained += l.errs
	}
	if missing > 0 || len(stored) > len(acked)+unexplained {
		t.Errorf("%d acknowledged jobs missing; %d stored for %d acknowledged (and %d without an answer)", missing, len(stored), len(acked), unexplained)
	}

	t.Logf("overload summary (%s mode, --max-requests %d, --memory-limit %s):", plan.name, olMaxRequests, plan.memoryLimit)
	t.Logf("  sustainable rate (closed loop, %d producers, %s): %.0f enqueues/s", plan.measureConns, plan.measure, rate)
	t.Logf("  admitted latency: server p99 from its own histogram; client p50/p99/max as the generator saw them")
	t.Logf("  %-5s %9s %7s %7s %7s %7s %6s %10s %9s %9s %9s %10s", "level", "offered/s", "sent", "201", "429", "dropped", "429%",
		"server p99", "p50", "p99", "max", "VmHWM")
	for _, l := range levels {
		t.Logf("  %-5s %9.0f %7d %7d %7d %7d %5.1f%% %10s %9s %9s %9s %10s", fmt.Sprintf("%dx", l.mult), l.offered, l.sent,
			l.codes[http.StatusCreated], l.codes[http.StatusTooManyRequests], l.clientDropped, 100*l.share429(),
			l.serverP99.Round(time.Millisecond), olQuantile(l.latencies, 0.5).Round(time.Millisecond),
			olQuantile(l.latencies, 0.99).Round(time.Millisecond), olQuantile(l.latencies, 1).Round(time.Millisecond), olMiB(l.hwm))
	}
	t.Logf("  large batches (%d jobs, ~1 MiB each) from %d connections for %s: %d sent, %d created (%d jobs), %d refused, %d timed out (408); VmHWM %s",
		olBigJobs, olBigConns, plan.level, big.sent, big.codes[http.StatusCreated], big.jobs, big.codes[http.StatusTooManyRequests],
		big.codes[http.StatusRequestTimeout], olMiB(bigHWM))
	for reason, n := range big.reasons {
		t.Logf("    429 %q: %d", reason, n)
	}
	t.Logf("  recovered %s after the load; next 20 enqueues: p50 %s, max %s", recovered.Round(time.Millisecond),
		olQuantile(after, 0.5).Round(time.Millisecond), olQuantile(after, 1).Round(time.Millisecond))
	t.Logf("  acknowledged %d jobs, stored %d, missing %d", len(acked), len(stored), missing)

	for _, l := range levels {
		for code, n := range l.codes {
			if code != http.StatusCreated && code != http.StatusTooManyRequests {
				t.Errorf("%dx: %d answers with status %d, want only 201 or 429", l.mult, n, code)
			}
		}
		if l.errs > 0 {
			t.Errorf("%dx: %d requests failed without an answer (first: %v)", l.mult, l.errs, l.firstErr)
		}
		if l.noRetryAfter > 0 {
			t.Errorf("%dx: %d 429s without Retry-After", l.mult, l.noRetryAfter)
		}
		if len(l.latencies) == 0 {
			t.Errorf("%dx: no request admitted", l.mult)
		} else if l.serverP99 > olP99Bound {
			t.Errorf("%dx: the server's p99 of admitted requests is %s, want under %s", l.mult, l.serverP99, olP99Bound)
		}
		if l.hwm >= plan.memoryCap {
			t.Errorf("%dx: the server's peak RSS %s reached its --memory-limit %s", l.mult, olMiB(l.hwm), plan.memoryLimit)
		}
	}
	for code, n := range big.codes {
		// 408: the server stopped waiting for a body after its 5s read
		// timeout, which a starved uploader on a shared machine can hit;
		// nothing was enqueued, and the client was told.
		if code != http.StatusCreated && code != http.StatusTooManyRequests && code != http.StatusRequestTimeout {
			t.Errorf("large batches: %d answers with status %d, want only 201, 429 or 408", n, code)
		}
	}
	if big.errs > 0 || big.noRetryAfter > 0 {
		t.Errorf("large batches: %d failed without an answer (first: %v), %d 429s without Retry-After", big.errs, big.firstErr, big.noRetryAfter)
	}
	if big.codes[http.StatusCreated] == 0 {
		t.Errorf("large batches: none admitted")
	}
	if bigHWM >= plan.memoryCap {
		t.Errorf("large batches: the server's peak RSS %s reached its --memory-limit %s", olMiB(bigHWM), plan.memoryLimit)
	}
	if stored := hwQueueCounts(t, base)["big"]; olSum(stored) != big.jobs {
		t.Errorf("large batches: %d jobs acknowledged, %d stored (%v)", big.jobs, olSum(stored), stored)
	}
	if top := levels[len(levels)-1]; top.codes[http.StatusTooManyRequests] == 0 {
		t.Errorf("%dx the sustainable rate: no 429 at all; the server did not shed load", top.mult)
	}
	if worst := olQuantile(after, 1); worst > olNormalLatency {
		t.Errorf("after recovery an enqueue took %s, want under %s", worst, olNormalLatency)
	}
}

// olRaiseNofile raises the test process's open-file limit to its hard
// limit and skips (fails on CI) when that is below need.
func olRaiseNofile(t *testing.T, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Max < need {
		msg := fmt.Sprintf("the hard limit on open files is %d, below the %d this test needs: raise it (ulimit -Hn)", lim.Max, need)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatalf("setrlimit: %v", err)
		}
	}
}

// olServerNofile returns the server's soft limit on open files.
func olServerNofile(t *testing.T, p *proc) uint64 {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the server's limits: %v", err)
	}
	for line := range strings.Lines(string(raw)) {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			n, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no \"Max open files\" in the server's limits")
	return 0
}

// olWaiters reads the drover_lease_waiters gauge.
func olWaiters(t *testing.T, base string) int {
	t.Helper()
	code, raw := hwCall(t, http.MethodGet, base+"/metrics", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d", code)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "drover_lease_waiters "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return int(n)
		}
	}
	t.Fatal("no drover_lease_waiters in /metrics")
	return 0
}

// olLeaseRequest is a raw long-poll lease for one job of queue.
func olLeaseRequest(queue string, wait time.Duration) []byte {
	// A long lease: no job may be rescued and leased again while ten
	// thousand waiters wake on a slow machine.
	body := fmt.Sprintf(`{"queues":[%q],"max":1,"wait":%q,"lease_for":"1h","worker":"idle"}`, queue, wait.String())
	return fmt.Appendf(nil, "POST /v1/lease HTTP/1.1\r\nHost: drover\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// olLeaseAnswer is what one parked lease call got.
type olLeaseAnswer struct {
	waited time.Duration // from the request to the answer
	code   int
	retry  string
	ids    []int64
	err    error
}

// olReadLease reads the answer to a raw lease request from br.
func olReadLease(br *bufio.Reader) olLeaseAnswer {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return olLeaseAnswer{err: err}
	}
	defer resp.Body.Close()
	a := olLeaseAnswer{code: resp.StatusCode, retry: resp.Header.Get("Retry-After")}
	var out struct {
		Jobs []struct {
			ID int64 `json:"id"`
		} `json:"jobs"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		a.err = fmt.Errorf("decode: %w", err)
		return a
	}
	for _, j := range out.Jobs {
		a.ids = append(a.ids, j.ID)
	}
	return a
}

// olPark keeps one waiter parked on conn, whose first lease request req
// was just sent, as a worker does: when a wait runs out empty, it asks
// again on the same connection (counted in repolls), so that parking and
// waking ten thousand may take longer than the longest wait on a slow
// machine. It sends the first other answer, or error, to answers.
func olPark(conn net.Conn, req []byte, wait time.Duration, answers chan<- olLeaseAnswer, repolls *atomic.Int64) {
	br := bufio.NewReader(conn)
	for sent := time.Now(); ; sent = time.Now() {
		a := olReadLease(br)
		a.waited = time.Since(sent)
		if a.err != nil || a.code != http.StatusOK || len(a.ids) > 0 || a.waited < wait-time.Second {
			answers <- a
			return
		}
		repolls.Add(1)
		if _, err := conn.Write(req); err != nil {
			answers <- olLeaseAnswer{err: fmt.Errorf("renew the lease call: %w", err)}
			return
		}
	}
}

// TestOverloadIdleLongPolls parks plan.waiters lease calls (the server's
// --max-lease-waiters) in long polls on an empty queue, checks that one
// more is refused with 429 and Retry-After, measures the server's RSS per
// parked waiter against olWaiterBytes, then enqueues one job per waiter
// and checks that every waiter wakes with exactly one job and that every
// job went to exactly one waiter.
//
//nolint:paralleltest // measures the machine: runs alone
func TestOverloadIdleLongPolls(t *testing.T) {
	plan := olPlanFor()
	n := plan.waiters
	olRaiseNofile(t, uint64(n)+1_000) //nolint:gosec // n is a small positive count
	srv, base := olServe(t, "--max-lease-waiters", strconv.Itoa(n))
	if got := olServerNofile(t, srv); got < uint64(n)+100 { //nolint:gosec // n is a small positive count
		t.Fatalf("the server's soft limit on open files is %d, below the %d connections it must hold", got, n)
	}
	addr := strings.TrimPrefix(base, "http://")

	// Warm the code paths that the waiters use, so that the baseline
	// includes them: a few leases, waiting and not.
	for _, w := range []string{"0s", "10ms"} {
		hwCallJSON(t, http.MethodPost, base+"/v1/lease", map[string]any{"queues": []string{"idle"}, "wait": w}, http.StatusOK, nil)
	}
	before := olStatus(t, srv, "VmRSS")[0]

	wait := 60 * time.Second // the longest wait the server allows
	req := olLeaseRequest("idle", wait)
	answers := make(chan olLeaseAnswer, n)
	conns := make([]net.Conn, n)
	var dialErrs, repolls atomic.Int64
	var firstDialErr atomic.Value
	var wg sync.WaitGroup
	next := atomic.Int64{}
	parkStart, parkCPU := time.Now(), olCPU(t, srv)
	for range 64 {
		wg.Go(func() {
			d := net.Dialer{Timeout: olHang}
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				conn, err := d.DialContext(t.Context(), "tcp", addr)
				if err == nil {
					_, err = conn.Write(req)
				}
				if err != nil {
					dialErrs.Add(1)
					firstDialErr.CompareAndSwap(nil, err)
					answers <- olLeaseAnswer{err: err}
					continue
				}
				conns[i] = conn
				go olPark(conn, req, wait, answers, &repolls)
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	})
	if dialErrs.Load() > 0 {
		t.Fatalf("%d of %d lease connections failed (first: %v)", dialErrs.Load(), n, firstDialErr.Load())
	}
	// All parked: the server counts them as waiting.
	deadline := time.Now().Add(olPark10k)
	parked := 0
	for parked = olWaiters(t, base); parked < n; parked = olWaiters(t, base) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d lease calls waiting after %s", parked, n, olPark10k)
		}
		select {
		case a := <-answers:
			t.Fatalf("a lease call answered before any job existed: status %d, err %v", a.code, a.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	parkTook, parkCPU := time.Since(parkStart), olCPU(t, srv)-parkCPU

	// One more is refused at once. (A waiter renewing its wait frees
	// its slot for a moment: a second or third try finds it taken.)
	var (
		code int
		raw  []byte
	)
	for range 3 {
		code, raw = hwCall(t, http.MethodPost, base+"/v1/lease", map[string]any{"queues": []string{"idle"}, "wait": "1s"})
		if code == http.StatusTooManyRequests {
			break
		}
	}
	if code != http.StatusTooManyRequests || !strings.Contains(string(raw), "overloaded") {
		t.Errorf("lease call %d: status %d (%s), want 429 overloaded", n+1, code, raw)
	}

	// Memory and CPU while parked.
	cpu0, at0 := olCPU(t, srv), time.Now()
	var with int64
	for range 10 {
		with = max(with, olStatus(t, srv, "VmRSS")[0])
		time.Sleep(100 * time.Millisecond) // sampling RSS over a second
	}
	idleCPU := float64(olCPU(t, srv)-cpu0) / float64(time.Since(at0))
	perWaiter := (with - before) / int64(n)

	// Wake them all: one job each.
	enqStart := time.Now()
	want := map[int64]bool{}
	for i := 0; i < n; i += 1000 {
		var batch struct {
			Jobs []map[string]any `json:"jobs"`
		}
		for k := i; k < min(n, i+1000); k++ {
			batch.Jobs = append(batch.Jobs, map[string]any{"kind": "wake", "queue": "idle", "args": map[string]int{"n": k}})
		}
		var out struct {
			Jobs []struct {
				ID int64 `json:"id"`
			} `json:"jobs"`
		}
		hwCallJSON(t, http.MethodPost, base+"/v1/jobs/batch", batch, http.StatusCreated, &out)
		for _, j := range out.Jobs {
			want[j.ID] = true
		}
	}
	got := map[int64]int{}
	empty, failed := 0, 0
	var firstFail olLeaseAnswer
	for range n {
		select {
		case a := <-answers:
			switch {
			case a.err != nil || a.code != http.StatusOK:
				failed++
				firstFail = a
			case len(a.ids) == 0:
				empty++
			}
			for _, id := range a.ids {
				got[id]++
			}
		case <-time.After(olPark10k):
			t.Fatalf("lease calls still parked %s after the last answer", olPark10k)
		}
	}
	wakeTook := time.Since(enqStart)

	t.Logf("idle long polls summary (%s mode):", plan.name)
	t.Logf("  %d waiters parked in %s (server CPU %s); server open-file limit %d; RSS %s before, %s with them: %d bytes per waiter",
		n, parkTook.Round(time.Millisecond), parkCPU, olServerNofile(t, srv), olMiB(before), olMiB(with), perWaiter)
	t.Logf("  server CPU while they wait: %.0f%% of one core; waiter %d refused with %d", 100*idleCPU, n+1, code)
	t.Logf("  %d jobs enqueued and all waiters answered in %s: %d with a job, %d empty, %d failed; %d waits ran out and were renewed",
		n, wakeTook.Round(time.Millisecond), len(got), empty, failed, repolls.Load())

	if perWaiter > olWaiterBytes {
		t.Errorf("%d bytes of RSS per parked waiter, want at most %d", perWaiter, olWaiterBytes)
	}
	if failed > 0 {
		t.Errorf("%d lease calls failed (one: status %d, err %v)", failed, firstFail.code, firstFail.err)
	}
	if empty > 0 {
		t.Errorf("%d lease calls ended empty before their wait was over, although a job was enqueued for each", empty)
	}
	for id, k := range got {
		if k > 1 || !want[id] {
			t.Errorf("job %d leased %d times (enqueued here: %v)", id, k, want[id])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d of %d jobs were leased by the waiters", len(got), len(want))
	}
}

// olCutSlack is how long past --read-header-timeout a slow connection may
// stay open before the test calls it not cut off: the server closes it
// from a timer, which a loaded machine may run late.
const olCutSlack = 10 * time.Second

// olSlowConn dials addr and sends a request's headers a byte per trickle
// until the server closes the connection, and returns how long that took.
// It fails when the server answers instead, or keeps the connection open
// past --read-header-timeout plus olCutSlack.
func olSlowConn(ctx context.Context, addr string, i int, trickle time.Duration) (time.Duration, error) {
	// From before the dial: the server cannot start its clock earlier,
	// so a close sooner than --read-header-timeout after this is early.
	started := time.Now()
	d := net.Dialer{Timeout: olHang}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	// The server closes the connection, after an error response or
	// none: the reader returns what it sent before the close.
	closed := make(chan []byte, 1)
	go func() {
		got, _ := io.ReadAll(conn)
		closed <- got
	}()
	header := fmt.Sprintf("POST /v1/jobs HTTP/1.1\r\nHost: drover\r\nX-Slow-%d: %s", i, strings.Repeat("x", 1<<10))
	tick := time.NewTicker(trickle)
	defer tick.Stop()
	giveUp := time.After(olHeaderTimeout + olCutSlack)
	for k := 0; ; k = (k + 1) % len(header) {
		if _, err := conn.Write([]byte{header[k]}); err != nil {
			return time.Since(started), nil // reset by the server after its close
		}
		select {
		case got := <-closed:
			if len(got) > 0 && !bytes.HasPrefix(got, []byte("HTTP/1.1 4")) {
				return 0, fmt.Errorf("the server answered a request whose headers never ended with %q", got)
			}
			return time.Since(started), nil
		case <-giveUp:
			return 0, fmt.Errorf("still open after %s", time.Since(started).Round(time.Millisecond))
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-tick.C:
		}
	}
}

// TestOverloadSlowloris keeps plan.slow connections open that each send a
// request's headers a byte at a time (reconnecting when cut, as an
// attacker would), and checks that the server closes every one of them
// once --read-header-timeout has passed, while a normal client keeps
// enqueueing beside them, every request answered 201, the server's p99
// and the client's median within olNormalLatency.
//
//nolint:paralleltest // measures the machine: runs alone
func TestOverloadSlowloris(t *testing.T) {
	plan := olPlanFor()
	olRaiseNofile(t, uint64(plan.slow)+1_000) //nolint:gosec // a small positive count
	srv, base := olServe(t, "--read-header-timeout", olHeaderTimeout.String())
	addr := strings.TrimPrefix(base, "http://")

	var (
		mu    sync.Mutex
		after []time.Duration // from each slow connection's start to its close
		errs  []error
		slow  sync.WaitGroup
	)
	// The normal client, connected before the slow ones come and
	// reusing its connection as clients do. (New connections would wait
	// behind the slow ones' in the kernel's accept queue, which is not
	// the server's to bound; and a fresh connection per request would
	// be cut too if this test process, busy with the slow connections
	// under the race detector, stalled between connecting and sending
	// for longer than the header timeout: that is what the timeout is
	// for.)
	normal := &http.Client{Timeout: olHang, Transport: olTransport(1)}
	defer normal.CloseIdleConnections()
	if code, _, _, err := olEnqueue(t.Context(), normal, base, "normal", -1); err != nil || code != http.StatusCreated {
		t.Fatalf("normal enqueue before the slow connections: status %d, err %v", code, err)
	}
	metrics := &http.Client{Timeout: olHang, Transport: olTransport(1)}
	defer metrics.CloseIdleConnections()
	h0 := olHistWith(t, metrics, base) // only the normal client's requests reach a route

	begin := time.Now()
	for i := range plan.slow {
		slow.Go(func() {
			for time.Since(begin) < plan.slowFor {
				took, err := olSlowConn(t.Context(), addr, i, plan.trickle)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					after = append(after, took)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}

	var lat []time.Duration
	for n := 0; time.Since(begin) < plan.slowFor; n++ {
		sent := time.Now()
		code, _, _, err := olEnqueue(t.Context(), normal, base, "normal", n)
		if err != nil || code != http.StatusCreated {
			t.Fatalf("normal enqueue beside slow connections: status %d, err %v", code, err)
		}
		lat = append(lat, time.Since(sent))
		time.Sleep(20 * time.Millisecond) // a modest producer
	}
	serverP99 := olHistQuantile(h0, olHistWith(t, metrics, base), 0.99)
	slow.Wait()
	slices.Sort(after)
	slices.Sort(lat)
	hwm := olStatus(t, srv, "VmHWM")[0]

	t.Logf("slowloris summary (%s mode, --read-header-timeout %s):", plan.name, olHeaderTimeout)
	t.Logf("  %d slow connections at a time for %s: %d cut off, after min %s, p50 %s, max %s; server VmHWM %s", plan.slow, plan.slowFor, len(after),
		olQuantile(after, 0).Round(time.Millisecond), olQuantile(after, 0.5).Round(time.Millisecond), olQuantile(after, 1).Round(time.Millisecond), olMiB(hwm))
	t.Logf("  normal client beside them: %d enqueues, server p99 %s; as the client saw them: p50 %s, p99 %s, max %s", len(lat),
		serverP99.Round(time.Millisecond), olQuantile(lat, 0.5).Round(time.Millisecond), olQuantile(lat, 0.99).Round(time.Millisecond),
		olQuantile(lat, 1).Round(time.Millisecond))

	if len(errs) > 0 {
		t.Errorf("%d slow connections not cut off (first: %v)", len(errs), errs[0])
	}
	if len(after) < plan.slow {
		t.Errorf("%d slow connections cut off, want at least %d", len(after), plan.slow)
	}
	if len(after) > 0 && after[0] < olHeaderTimeout {
		t.Errorf("a slow connection was cut after %s, before the %s header timeout", after[0], olHeaderTimeout)
	}
	// The server's own p99, and the client's median: the client's tail
	// also holds this process's stalls, busy with the slow connections
	// under the race detector (its requests never hang: olHang).
	if serverP99 > olNormalLatency {
		t.Errorf("the server's p99 of the normal enqueues beside the slow connections is %s, want under %s", serverP99, olNormalLatency)
	}
	if p50 := olQuantile(lat, 0.5); p50 > olNormalLatency {
		t.Errorf("the normal enqueues beside the slow connections took %s at the median, want under %s", p50, olNormalLatency)
	}
}
