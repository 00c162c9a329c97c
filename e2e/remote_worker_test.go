package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
)

// goWorkerBin builds examples/go-worker once for the tests that run it.
var goWorkerBin = sync.OnceValues(func() (string, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "drover-go-worker-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "go-worker")
	build := exec.Command("go", "build", "-o", bin, "./examples/go-worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build examples/go-worker: %w\n%s", err, out)
	}
	return bin, nil
})

// startGoWorker runs the Go worker example with args.
func startGoWorker(t *testing.T, args ...string) *proc {
	t.Helper()
	bin, err := goWorkerBin()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Env = cleanEnv()
	p.cmd.Dir = t.TempDir()
	p.launch(t, fmt.Sprintf("go-worker %q", args))
	return p
}

// completions counts completed events per job from the server's gRPC
// event stream.
type completions struct {
	mu     sync.Mutex
	byJob  map[int64]int
	total  int
	err    error
	update chan struct{}
}

func (c *completions) count() (total int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total, c.err
}

// waitFor waits until n completions were seen, failing the test after d.
func (c *completions) waitFor(t *testing.T, n int, d time.Duration, what string) {
	t.Helper()
	deadline := time.After(d)
	for {
		total, err := c.count()
		if err != nil {
			t.Fatalf("event stream: %v", err)
		}
		if total >= n {
			return
		}
		select {
		case <-c.update:
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%s: %d completions after %s, want %d", what, total, d, n)
		}
	}
}

// watchCompletions subscribes to completed jobs of queue. It returns once
// the subscription is live on the server (drover_event_subscribers).
func watchCompletions(t *testing.T, base, queue string) *completions {
	t.Helper()
	c := &completions{byJob: map[int64]int{}, update: make(chan struct{}, 1)}
	events := droverv1connect.NewEventServiceClient(h2c(), base, connect.WithGRPC())
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := events.Subscribe(ctx, connect.NewRequest(&droverv1.SubscribeRequest{
		Queue: []string{queue}, State: []droverv1.JobState{droverv1.JobState_JOB_STATE_COMPLETED},
	}))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		defer stream.Close()
		for stream.Receive() {
			ev := stream.Msg().GetEvent()
			c.mu.Lock()
			c.byJob[ev.GetJobId()]++
			c.total++
			c.mu.Unlock()
			select {
			case c.update <- struct{}{}:
			default:
			}
		}
		if ctx.Err() == nil {
			c.mu.Lock()
			c.err = fmt.Errorf("the event stream ended: %w", stream.Err())
			c.mu.Unlock()
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, base, "drover_event_subscribers") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the event subscription did not register within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return c
}

// h2c is an HTTP/2 client over plaintext, for gRPC.
func h2c() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}}
}

var metricLine = regexp.MustCompile(`(?m)^(\S+) (\S+)$`)

// metric reads one unlabelled metric from base/metrics; -1 when absent.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range metricLine.FindAllStringSubmatch(string(b), -1) {
		if m[1] == name {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	return -1
}

// ledgerLine is one finished attempt, as the Go worker example records it.
type ledgerLine struct {
	id      int64
	attempt int
	ok      bool
}

func readLedger(t *testing.T, path string) []ledgerLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []ledgerLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l ledgerLine
		var outcome string
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %s", &l.id, &l.attempt, &outcome); err != nil {
			continue // a line torn by the kill
		}
		l.ok = outcome == "ok"
		out = append(out, l)
	}
	return out
}

// TestRemoteGoWorkerKilled runs the Go library's worker as a separate
// process against `drover serve` over the gRPC Work stream: 10,000 jobs,
// the worker killed with SIGKILL a third of the way through, a second
// worker process started after. Every job must end completed, each
// completed exactly once (counted from the server's event stream), and
// the jobs the killed worker held must come back after their leases
// expire.
func TestRemoteGoWorkerKilled(t *testing.T) {
	t.Parallel()
	const (
		total = 10_000
		queue = "resize"
	)
	addr := freeAddr(t)
	srv := start(t, nil, "serve", "--addr", addr, "--data-dir", t.TempDir(), "--log-format", "json")
	base := "http://" + addr
	waitReady(t, srv, base)
	done := watchCompletions(t, base, queue)

	enq := startGoWorker(t, "-target", base, "-queue", queue, "-enqueue", strconv.Itoa(total))
	if code := enq.exitCode(t, 2*time.Minute); code != 0 {
		t.Fatalf("enqueue exited %d:\n%s", code, enq.stderr.String())
	}
	dir := t.TempDir()
	ledger1, ledger2 := filepath.Join(dir, "first.ledger"), filepath.Join(dir, "second.ledger")
	workerArgs := []string{"-target", base, "-queue", queue, "-workers", "50", "-lease-for", "2s", "-work", "2ms", "-fail-every", "997"}
	first := startGoWorker(t, append(workerArgs, "-ledger", ledger1)...)
	done.waitFor(t, total/3, 2*time.Minute, "the first worker")
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	atKill, _ := done.count()

	second := startGoWorker(t, append(workerArgs, "-ledger", ledger2)...)
	done.waitFor(t, total, 3*time.Minute, "the second worker")
	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := second.exitCode(t, stopDeadline+30*time.Second); code != 0 {
		t.Fatalf("the second worker exited %d on SIGTERM, want 0:\n%s", code, second.stderr.String())
	}

	// Exactly once, from the server's own account.
	done.mu.Lock()
	twice := 0
	for id, n := range done.byJob {
		if n != 1 {
			twice++
			if twice <= 5 {
				t.Errorf("job %d completed %d times", id, n)
			}
		}
	}
	distinct := len(done.byJob)
	done.mu.Unlock()
	if twice > 0 || distinct != total {
		t.Fatalf("%d distinct jobs completed (%d of them more than once), want %d each once", distinct, twice, total)
	}
	counts := hwQueueCounts(t, base)[queue]
	if counts["completed"] != total || counts["available"]+counts["running"]+counts["retryable"]+counts["scheduled"]+counts["discarded"] != 0 {
		t.Fatalf("queue counts %v, want all %d completed", counts, total)
	}

	// The killed worker's leases: jobs it held came back to the second
	// worker at a later attempt, and the rescuer recorded the expiry in
	// their history. An attempt after the first that follows no failure
	// of the worker's own (-fail-every) is such a re-delivery.
	firstRuns, secondRuns := readLedger(t, ledger1), readLedger(t, ledger2)
	failed := map[[2]int64]bool{}
	seen := map[[2]int64]bool{}
	for _, l := range append(firstRuns, secondRuns...) {
		k := [2]int64{l.id, int64(l.attempt)}
		if seen[k] {
			t.Errorf("job %d attempt %d ran twice: one lease was delivered twice", l.id, l.attempt)
		}
		seen[k] = true
		if !l.ok {
			failed[k] = true
		}
	}
	var redelivered []int64
	for _, l := range secondRuns {
		if l.attempt > 1 && !failed[[2]int64{l.id, int64(l.attempt - 1)}] {
			redelivered = append(redelivered, l.id)
		}
	}
	t.Logf("%d completions before the kill; the first worker finished %d attempts, the second %d; %d jobs re-delivered after lease expiry",
		atKill, len(firstRuns), len(secondRuns), len(redelivered))
	if atKill >= total {
		t.Fatal("the first worker finished every job before it was killed; the test killed nothing")
	}
	if len(redelivered) == 0 {
		t.Fatal("no job of the killed worker was re-delivered; its leases were not rescued")
	}
	var j struct {
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	hwCallJSON(t, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", base, redelivered[0]), nil, http.StatusOK, &j)
	if len(j.Errors) == 0 || !strings.HasPrefix(j.Errors[len(j.Errors)-1].Message, "lease expired") {
		t.Fatalf("re-delivered job %d has errors %+v, want a lease expiry last", redelivered[0], j.Errors)
	}
}
