package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// droverBin is the binary that TestMain builds from ../cmd/drover.
var droverBin string

const (
	readyDeadline = 30 * time.Second // start to ready, on a slow CI machine
	stopDeadline  = 10 * time.Second // SIGTERM to exit, as operators expect
	runDeadline   = 30 * time.Second // a command that should end by itself
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %s is not the module root: %v\n", root, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "drover-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	droverBin = filepath.Join(dir, "drover")
	if runtime.GOOS == "windows" {
		droverBin += ".exe"
	}
	build := exec.Command("go", "build", "-o", droverBin, "./cmd/drover")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build drover:", err)
		return 1
	}
	return m.Run()
}

// syncBuffer is a bytes.Buffer that a process may write while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a drover process started in the background.
type proc struct {
	cmd    *exec.Cmd
	stdout syncBuffer
	stderr syncBuffer
	done   chan struct{} // closed when the process has exited
}

// cleanEnv is the test's environment without DROVER_* variables, so that
// the caller's shell cannot change what the tests see.
func cleanEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "DROVER_") })
	return append(env, extra...)
}

// start runs drover with args and the extra environment variables env, in
// a fresh working directory. The process is killed when the test ends if
// it is still running.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(droverBin, args...), done: make(chan struct{})}
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Dir = t.TempDir()
	p.launch(t, fmt.Sprintf("drover %q", args))
	return p
}

// launch starts p's command, collecting its output, and kills it when the
// test ends if it is still running.
func (p *proc) launch(t *testing.T, what string) {
	t.Helper()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	go func() {
		p.cmd.Wait() //nolint:errcheck // the exit status is read from ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill() //nolint:errcheck // it may just have exited
			<-p.done
		}
	})
}

// exitCode waits up to d for the process to exit and returns its status.
func (p *proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("drover %q still running after %s; stderr:\n%s", p.cmd.Args[1:], d, p.stderr.String())
		return -1
	}
}

// run runs drover with args to completion and returns its exit status,
// stdout and stderr.
func run(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	p := start(t, env, args...)
	code = p.exitCode(t, runDeadline)
	return code, p.stdout.String(), p.stderr.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

var client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// getJSON fetches url and decodes its JSON object body.
func getJSON(t *testing.T, url string) (int, map[string]string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("decode body of %s: %w", url, err)
	}
	return resp.StatusCode, body, nil
}

// waitReady polls base/readyz until it answers 200, failing the test if
// the process exits first or the deadline passes.
func waitReady(t *testing.T, p *proc, base string) {
	t.Helper()
	deadline := time.After(readyDeadline)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		code, _, err := getJSON(t, base+"/readyz")
		if err == nil && code == http.StatusOK {
			return
		}
		lastErr = err
		if err == nil {
			lastErr = fmt.Errorf("status %d", code)
		}
		select {
		case <-p.done:
			t.Fatalf("drover exited with status %d before it was ready; stderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
		case <-deadline:
			t.Fatalf("%s/readyz not ready after %s (last: %v); stderr:\n%s", base, readyDeadline, lastErr, p.stderr.String())
		case <-tick.C:
		}
	}
}

// lines returns the non-blank lines of s.
func lines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// logMessages parses JSON log lines and returns their msg fields, failing
// the test on a line that is not a JSON object.
func logMessages(t *testing.T, stderr string) []string {
	t.Helper()
	var msgs []string
	for _, line := range lines(stderr) {
		var rec struct {
			Time  string `json:"time"`
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON (%v): %s", err, line)
			continue
		}
		if rec.Time == "" || rec.Level == "" {
			t.Errorf("log line lacks time or level: %s", line)
		}
		msgs = append(msgs, rec.Msg)
	}
	return msgs
}

// stop sends SIGTERM and checks that drover exits with status 0 within
// stopDeadline.
func stop(t *testing.T, p *proc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}
	if code := p.exitCode(t, stopDeadline); code != 0 {
		t.Fatalf("drover exited with status %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr.String())
	}
}

func skipWithoutSIGTERM(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on Windows")
	}
}

func TestServeLifecycle(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	dataDir := t.TempDir()
	addr := freeAddr(t)
	base := "http://" + addr
	srv := start(t, nil, "serve", "--addr", addr, "--data-dir", dataDir, "--log-format", "json")
	waitReady(t, srv, base)

	//nolint:paralleltest // ordered steps over one running server
	t.Run("healthz", func(t *testing.T) {
		code, body, err := getJSON(t, base+"/healthz")
		if err != nil || code != http.StatusOK || body["status"] != "ok" {
			t.Errorf("GET /healthz = %d %v (err %v), want 200 {\"status\":\"ok\"}", code, body, err)
		}
	})

	//nolint:paralleltest // ordered steps over one running server
	t.Run("readyz", func(t *testing.T) {
		code, body, err := getJSON(t, base+"/readyz")
		if err != nil || code != http.StatusOK || body["status"] != "ready" {
			t.Errorf("GET /readyz = %d %v (err %v), want 200 {\"status\":\"ready\"}", code, body, err)
		}
	})

	//nolint:paralleltest // ordered steps over one running server
	t.Run("second serve on the same data dir fails", func(t *testing.T) {
		code, _, stderr := run(t, nil, "serve", "--addr", freeAddr(t), "--data-dir", dataDir, "--log-format", "json")
		if code != 1 {
			t.Errorf("second drover serve exited with status %d, want 1; stderr:\n%s", code, stderr)
		}
		got := lines(stderr)
		if len(got) != 1 {
			t.Fatalf("second drover serve wrote %d lines to stderr, want 1:\n%s", len(got), stderr)
		}
		for _, want := range []string{"data directory", "in use", dataDir} {
			if !strings.Contains(got[0], want) {
				t.Errorf("stderr line %q does not mention %q", got[0], want)
			}
		}
		// The failed start must not disturb the running server.
		if code, _, err := getJSON(t, base+"/readyz"); err != nil || code != http.StatusOK {
			t.Errorf("GET /readyz after the second serve failed = %d (err %v), want 200", code, err)
		}
	})

	//nolint:paralleltest // ordered steps over one running server
	t.Run("SIGTERM stops gracefully", func(t *testing.T) {
		stop(t, srv)
		msgs := logMessages(t, srv.stderr.String())
		serving := slices.Index(msgs, "drover serving")
		stopping := slices.Index(msgs, "drover stopping")
		stopped := slices.Index(msgs, "drover stopped")
		if serving < 0 || stopping < serving || stopped < stopping {
			t.Errorf("log messages %q, want \"drover serving\", \"drover stopping\" and \"drover stopped\" in that order", msgs)
		}
		if _, err := os.Stat(filepath.Join(dataDir, "drover.db")); err != nil {
			t.Errorf("data dir after stop: %v", err)
		}
	})

	//nolint:paralleltest // ordered steps over one running server
	t.Run("data dir is released after stop", func(t *testing.T) {
		addr := freeAddr(t)
		again := start(t, nil, "serve", "--addr", addr, "--data-dir", dataDir)
		waitReady(t, again, "http://"+addr)
		stop(t, again)
	})
}

func TestServeReadsEnvironment(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	addr := freeAddr(t)
	dataDir := filepath.Join(t.TempDir(), "data") // created by serve
	srv := start(t, []string{"DROVER_ADDR=" + addr, "DROVER_DATA_DIR=" + dataDir}, "serve")
	base := "http://" + addr
	waitReady(t, srv, base)
	code, body, err := getJSON(t, base+"/healthz")
	if err != nil || code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("GET /healthz on DROVER_ADDR = %d %v (err %v), want 200 ok", code, body, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "drover.db")); err != nil {
		t.Errorf("DROVER_DATA_DIR has no drover.db: %v", err)
	}
	if _, err := os.Stat(filepath.Join(srv.cmd.Dir, "drover-data")); err == nil {
		t.Errorf("the default data dir was created in the working directory despite DROVER_DATA_DIR")
	}
	stop(t, srv)
}

func TestServeFlagsOverrideEnvironment(t *testing.T) {
	t.Parallel()
	skipWithoutSIGTERM(t)
	addr := freeAddr(t)
	dataDir := t.TempDir()
	// The environment alone would be refused (non-loopback, bad format).
	env := []string{"DROVER_ADDR=0.0.0.0:1", "DROVER_LOG_FORMAT=xml", "DROVER_DATA_DIR=" + filepath.Join(t.TempDir(), "unused")}
	srv := start(t, env, "serve", "--addr", addr, "--data-dir", dataDir, "--log-format", "text")
	waitReady(t, srv, "http://"+addr)
	if _, err := os.Stat(filepath.Join(dataDir, "drover.db")); err != nil {
		t.Errorf("--data-dir has no drover.db: %v", err)
	}
	stop(t, srv)
	if !strings.Contains(srv.stderr.String(), "msg=\"drover stopped\"") {
		t.Errorf("text logs lack msg=\"drover stopped\":\n%s", srv.stderr.String())
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, nil, "version")
	if code != 0 {
		t.Fatalf("drover version exited with status %d; stderr:\n%s", code, stderr)
	}
	if first := lines(stdout); len(first) == 0 || !strings.HasPrefix(first[0], "drover ") {
		t.Errorf("drover version printed %q, want a first line starting \"drover \"", stdout)
	}
	if stderr != "" {
		t.Errorf("drover version wrote to stderr: %q", stderr)
	}
}

func TestBadUsageExitsTwoWithOneLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want []string // each must appear in the one stderr line
	}{
		{"non-loopback address", []string{"serve", "--addr", "0.0.0.0:1"}, []string{"addr", "--insecure"}},
		{"several config problems", []string{"serve", "--lease-for", "10ms", "--log-format", "xml"}, []string{"lease_for", "log_format"}},
		{"unknown flag", []string{"serve", "--nope"}, []string{"--nope"}},
		{"extra argument", []string{"serve", "extra-arg"}, []string{"extra-arg"}},
		{"unknown command", []string{"nosuchcommand"}, []string{"nosuchcommand"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// A data dir of its own, in case a case wrongly gets as far as
			// opening the store.
			args := append(slices.Clone(tt.args), "--data-dir", t.TempDir())
			code, _, stderr := run(t, nil, args...)
			if code != 2 {
				t.Errorf("drover %q exited with status %d, want 2", args, code)
			}
			got := lines(stderr)
			if len(got) != 1 {
				t.Fatalf("drover %q wrote %d lines to stderr, want 1:\n%s", args, len(got), stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(got[0], want) {
					t.Errorf("stderr line %q does not mention %q", got[0], want)
				}
			}
		})
	}
}
