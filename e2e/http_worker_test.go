package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hwWorkerDeadline bounds a Python worker run: 1,000 jobs take a few
// seconds, the rest is room for a slow CI machine.
const hwWorkerDeadline = 120 * time.Second

// hwJob is the part of a job on the wire that these tests look at.
type hwJob struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args"`
	State       string          `json:"state"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	Output      json.RawMessage `json:"output"`
	Errors      []struct {
		Attempt int    `json:"attempt"`
		Message string `json:"message"`
		Detail  string `json:"detail"`
	} `json:"errors"`
	Duplicate bool `json:"duplicate"`
}

// hwClient has a longer timeout than client, for batches on a busy
// machine.
var hwClient = &http.Client{Timeout: 30 * time.Second}

// hwCall sends a request with an optional JSON body and returns the status
// and the raw response body.
func hwCall(t *testing.T, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hwClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, raw
}

// hwCallJSON is hwCall that wants status want and decodes the reply into out.
func hwCallJSON(t *testing.T, method, url string, body any, want int, out any) {
	t.Helper()
	code, raw := hwCall(t, method, url, body)
	if code != want {
		t.Fatalf("%s %s = %d, want %d; body: %s", method, url, code, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, url, raw, err)
		}
	}
}

// hwServe runs drover serve on a fresh data directory and returns the
// process and its base URL.
func hwServe(t *testing.T) (*proc, string) {
	t.Helper()
	addr := freeAddr(t)
	srv := start(t, nil, "serve", "--addr", addr, "--data-dir", t.TempDir(), "--log-format", "json")
	base := "http://" + addr
	waitReady(t, srv, base)
	return srv, base
}

// hwPython3 returns the path of python3. Without one the test fails on CI
// (CI=true), where the example must be checked, and is skipped elsewhere.
func hwPython3(t *testing.T) string {
	t.Helper()
	py, err := exec.LookPath("python3")
	if err != nil {
		msg := "python3 not found on PATH: the Python worker example (examples/python-worker) is NOT tested"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip("SKIP: " + msg)
	}
	return py
}

// hwStartWorker runs examples/python-worker/worker.py from the module
// root with args. It is killed when the test ends if still running.
func hwStartWorker(t *testing.T, base string, args ...string) *proc {
	t.Helper()
	py := hwPython3(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	argv := append([]string{"examples/python-worker/worker.py", "--server", base}, args...)
	p := &proc{cmd: exec.Command(py, argv...), done: make(chan struct{})}
	p.cmd.Dir = root
	p.cmd.Env = cleanEnv("PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	p.launch(t, "the Python worker")
	return p
}

// hwWaitWorker waits for the worker to exit with status 0.
func hwWaitWorker(t *testing.T, w *proc, d time.Duration) {
	t.Helper()
	select {
	case <-w.done:
	case <-time.After(d):
		t.Fatalf("the Python worker is still running after %s; its log:\n%s", d, w.stderr.String())
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the Python worker exited with status %d, want 0; its log:\n%s", code, w.stderr.String())
	}
}

// hwEchoArgs returns varied args for the i-th echo job: mostly objects, and
// every JSON type that a handler might echo back (not null, which an echo
// handler turns into "no output").
func hwEchoArgs(i int) any {
	switch i % 50 {
	case 7:
		return fmt.Sprintf("just a string %d ✓", i)
	case 13:
		return []any{i, "two", 3.5, true, map[string]any{"nested": []any{}}}
	case 29:
		return i
	case 31:
		return false
	}
	return map[string]any{
		"n":       i,
		"name":    fmt.Sprintf("job-%04d", i),
		"ratio":   float64(i) / 8,
		"unicode": "héllo, 世界",
		"tags":    []string{"a", "b"},
		"nested":  map[string]any{"even": i%2 == 0, "none": nil},
	}
}

// hwSameJSON reports whether a and b are the same JSON value.
func hwSameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// hwQueueCounts returns the counts per state of every queue.
func hwQueueCounts(t *testing.T, base string) map[string]map[string]int {
	t.Helper()
	var qs struct {
		Queues []struct {
			Name   string         `json:"name"`
			Counts map[string]int `json:"counts"`
		} `json:"queues"`
	}
	hwCallJSON(t, http.MethodGet, base+"/v1/queues", nil, http.StatusOK, &qs)
	out := map[string]map[string]int{}
	for _, q := range qs.Queues {
		out[q.Name] = q.Counts
	}
	return out
}

// TestPythonWorkerDrainsOverHTTP enqueues 1,000 echo jobs over REST, lets
// the Python example worker drain them, and checks every job's outcome over
// REST: the whole HTTP worker protocol (long-poll lease, heartbeat,
// complete, fail) as a worker in another language uses it.
func TestPythonWorkerDrainsOverHTTP(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	hwPython3(t) // before starting anything
	srv, base := hwServe(t)

	const (
		total   = 1000
		singles = 40  // enqueued one by one
		batch   = 240 // the rest in batches of this size
		echoQ   = "e2e-echo"
		miscQ   = "e2e-misc"
	)
	want := map[int64]json.RawMessage{} // job id -> args as sent
	enqueued := func(j hwJob, i int) {
		t.Helper()
		if j.ID <= 0 || j.State != "available" || j.Kind != "echo" || j.Queue != echoQ {
			t.Fatalf("enqueued job %d: %+v", i, j)
		}
		if _, dup := want[j.ID]; dup {
			t.Fatalf("job id %d given twice", j.ID)
		}
		b, err := json.Marshal(hwEchoArgs(i))
		if err != nil {
			t.Fatal(err)
		}
		if !hwSameJSON(t, j.Args, b) {
			t.Fatalf("enqueued job %d: args %s, sent %s", j.ID, j.Args, b)
		}
		want[j.ID] = b
	}
	for i := range singles {
		var j hwJob
		hwCallJSON(t, http.MethodPost, base+"/v1/jobs",
			map[string]any{"kind": "echo", "queue": echoQ, "args": hwEchoArgs(i)}, http.StatusCreated, &j)
		enqueued(j, i)
	}
	for from := singles; from < total; from += batch {
		var jobs []map[string]any
		for i := from; i < min(from+batch, total); i++ {
			jobs = append(jobs, map[string]any{"kind": "echo", "queue": echoQ, "args": hwEchoArgs(i)})
		}
		var res struct{ Jobs []hwJob }
		hwCallJSON(t, http.MethodPost, base+"/v1/jobs/batch", map[string]any{"jobs": jobs}, http.StatusCreated, &res)
		if len(res.Jobs) != len(jobs) {
			t.Fatalf("batch of %d enqueued %d jobs", len(jobs), len(res.Jobs))
		}
		for k, j := range res.Jobs {
			enqueued(j, from+k)
		}
	}
	if len(want) != total {
		t.Fatalf("enqueued %d distinct jobs, want %d", len(want), total)
	}

	// A job that always fails, once with attempts left and once with none;
	// and one that runs twice as long as its lease, so that only
	// heartbeats keep it.
	const failMsg = "card declined: insufficient funds (e2e)"
	var retryable, discarded, slow hwJob
	hwCallJSON(t, http.MethodPost, base+"/v1/jobs",
		map[string]any{"kind": "fail", "queue": miscQ, "args": map[string]any{"message": failMsg}},
		http.StatusCreated, &retryable)
	hwCallJSON(t, http.MethodPost, base+"/v1/jobs",
		map[string]any{"kind": "fail", "queue": miscQ, "args": map[string]any{"message": failMsg}, "max_attempts": 1},
		http.StatusCreated, &discarded)
	hwCallJSON(t, http.MethodPost, base+"/v1/jobs",
		map[string]any{"kind": "sleep", "queue": miscQ, "args": map[string]any{"seconds": 6}},
		http.StatusCreated, &slow)

	w := hwStartWorker(t, base, "--queue", echoQ, "--queue", miscQ,
		"--concurrency", "8", "--idle-exit", "3", "--lease-for", "3")
	hwWaitWorker(t, w, hwWorkerDeadline)

	// Every echo job completed, with its args as output.
	completed := map[int64]hwJob{}
	cursor, pages := "", 0
	for {
		q := url.Values{"state": {"completed"}, "limit": {"150"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Jobs       []hwJob `json:"jobs"`
			NextCursor string  `json:"next_cursor"`
		}
		hwCallJSON(t, http.MethodGet, base+"/v1/jobs?"+q.Encode(), nil, http.StatusOK, &page)
		pages++
		for _, j := range page.Jobs {
			if j.State != "completed" {
				t.Errorf("GET /v1/jobs?state=completed listed job %d in state %s", j.ID, j.State)
			}
			if _, seen := completed[j.ID]; seen {
				t.Errorf("job %d listed on two pages", j.ID)
			}
			completed[j.ID] = j
		}
		if page.NextCursor == "" {
			break
		}
		if pages > 100 {
			t.Fatalf("more than 100 pages of 150 completed jobs")
		}
		cursor = page.NextCursor
	}
	if pages < total/150 {
		t.Errorf("listed %d completed jobs in %d pages of at most 150", len(completed), pages)
	}
	missing := 0
	for id, args := range want {
		j, ok := completed[id]
		if !ok {
			missing++
			if missing <= 5 {
				t.Errorf("echo job %d is not completed", id)
			}
			continue
		}
		if !hwSameJSON(t, j.Output, args) {
			t.Errorf("job %d: output %s, want its args %s", id, j.Output, args)
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d echo jobs are not completed; worker log:\n%s", missing, total, w.stderr.String())
	}
	if len(completed) != total+1 { // the echo jobs and the sleep job
		t.Errorf("%d completed jobs, want %d", len(completed), total+1)
	}

	// The long job completed on its first attempt: heartbeats kept its
	// 3s lease alive for 6s.
	var got hwJob
	hwCallJSON(t, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", base, slow.ID), nil, http.StatusOK, &got)
	if got.State != "completed" || got.Attempt != 1 || len(got.Errors) != 0 {
		t.Errorf("sleep job (6s on a 3s lease) = state %s, attempt %d, errors %+v; want completed on attempt 1 without errors",
			got.State, got.Attempt, got.Errors)
	}

	// The failing jobs carry the Python exception in their history.
	for _, tc := range []struct {
		job   hwJob
		state string
	}{{retryable, "retryable"}, {discarded, "discarded"}} {
		hwCallJSON(t, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", base, tc.job.ID), nil, http.StatusOK, &got)
		if got.State != tc.state {
			t.Errorf("fail job %d (max_attempts %d) is %s, want %s", got.ID, got.MaxAttempts, got.State, tc.state)
		}
		if len(got.Errors) == 0 {
			t.Errorf("fail job %d has no errors history", got.ID)
			continue
		}
		e := got.Errors[0]
		if e.Attempt != 1 || !strings.Contains(e.Message, failMsg) || !strings.Contains(e.Message, "RuntimeError") {
			t.Errorf("fail job %d: first error %+v, want attempt 1 with message \"RuntimeError: %s\"", got.ID, e, failMsg)
		}
		if !strings.Contains(e.Detail, "Traceback") {
			t.Errorf("fail job %d: error detail %q, want the Python traceback", got.ID, e.Detail)
		}
	}

	counts := hwQueueCounts(t, base)
	if c := counts[echoQ]; c["completed"] != total || c["available"] != 0 || c["running"] != 0 {
		t.Errorf("GET /v1/queues: %s counts %v, want %d completed and none available or running", echoQ, c, total)
	}
	if c := counts[miscQ]; c["completed"] != 1 || c["retryable"] != 1 || c["discarded"] != 1 || c["running"] != 0 {
		t.Errorf("GET /v1/queues: %s counts %v, want 1 completed, 1 retryable, 1 discarded", miscQ, c)
	}
	stop(t, srv)
}

// TestPythonWorkerStopsGracefully sends SIGTERM to the Python worker while
// it runs a job: it finishes and completes that job, then exits 0.
func TestPythonWorkerStopsGracefully(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	hwPython3(t)
	srv, base := hwServe(t)

	var job hwJob
	hwCallJSON(t, http.MethodPost, base+"/v1/jobs",
		map[string]any{"kind": "sleep", "args": map[string]any{"seconds": 2}}, http.StatusCreated, &job)
	w := hwStartWorker(t, base, "--wait", "1")

	// Wait until the worker holds the job.
	deadline := time.Now().Add(hwWorkerDeadline)
	for {
		var got hwJob
		hwCallJSON(t, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", base, job.ID), nil, http.StatusOK, &got)
		if got.State == "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not lease job %d in %s; its log:\n%s", job.ID, hwWorkerDeadline, w.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	hwWaitWorker(t, w, 30*time.Second)
	var got hwJob
	hwCallJSON(t, http.MethodGet, fmt.Sprintf("%s/v1/jobs/%d", base, job.ID), nil, http.StatusOK, &got)
	if got.State != "completed" || got.Attempt != 1 {
		t.Errorf("job after SIGTERM to its worker: state %s attempt %d, want completed on attempt 1; worker log:\n%s",
			got.State, got.Attempt, w.stderr.String())
	}
	stop(t, srv)
}
