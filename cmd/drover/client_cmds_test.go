package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/server"
)

// startServer runs the real server assembly in-process on a port-0
// loopback address and returns its base URL.
func startServer(t *testing.T) string {
	t.Helper()
	return startServerIn(t, filepath.Join(t.TempDir(), "data"))
}

// startServerIn is startServer on a given data directory.
func startServerIn(t *testing.T, dir string) string {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.Addr = "127.0.0.1:0"
	cfg.NoSync = true
	srv, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	base := "http://" + ln.Addr().String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server at %s not ready", base)
		}
		time.Sleep(10 * time.Millisecond) // polling readiness, with a deadline
	}
}

// cli runs one command line against base and returns stdout, stderr and
// the error the command returned.
func cli(t *testing.T, base string, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append(args, "--server", base))
	err := root.ExecuteContext(t.Context())
	return out.String(), errb.String(), err
}

func mustCLI(t *testing.T, base string, args ...string) string {
	t.Helper()
	out, errOut, err := cli(t, base, args...)
	if err != nil {
		t.Fatalf("drover %s: %v (stderr %q)", strings.Join(args, " "), err, errOut)
	}
	return out
}

func TestClientCommandsAgainstServer(t *testing.T) {
	t.Parallel()
	base := startServer(t)

	out := mustCLI(t, base, "enqueue", "email.send", `{"to":"a@example.com"}`, "--priority", "2", "--tag", "welcome", "--queue", "mail")
	if !strings.Contains(out, "enqueued job 1 (email.send) in queue mail: available") {
		t.Fatalf("enqueue printed %q", out)
	}
	var j struct {
		ID        int64           `json:"id"`
		State     string          `json:"state"`
		Duplicate bool            `json:"duplicate"`
		Args      json.RawMessage `json:"args"`
	}
	out = mustCLI(t, base, "enqueue", "report", "--unique-key", "daily", "--delay", "1h", "-o", "json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || j.State != "scheduled" || j.Duplicate {
		t.Fatalf("enqueue -o json: %v %+v from %q", err, j, out)
	}
	first := j.ID
	out = mustCLI(t, base, "enqueue", "report", "--unique-key", "daily", "-o", "json")
	if err := json.Unmarshal([]byte(out), &j); err != nil || !j.Duplicate || j.ID != first {
		t.Fatalf("duplicate enqueue: %+v from %q", j, out)
	}

	out = mustCLI(t, base, "jobs", "ls", "--queue", "mail")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "email.send") || !strings.Contains(lines[1], "available") {
		t.Fatalf("jobs ls printed:\n%s", out)
	}
	var page struct {
		Jobs []struct {
			ID int64 `json:"id"`
		} `json:"jobs"`
		NextCursor string `json:"next_cursor"`
	}
	out = mustCLI(t, base, "jobs", "ls", "--limit", "1", "-o", "json")
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Jobs) != 1 || page.NextCursor == "" {
		t.Fatalf("jobs ls -o json page: %+v from %q", page, out)
	}
	out = mustCLI(t, base, "jobs", "ls", "--limit", "1", "--cursor", page.NextCursor, "-o", "json")
	if err := json.Unmarshal([]byte(out), &page); err != nil || len(page.Jobs) != 1 || page.Jobs[0].ID != first {
		t.Fatalf("second page: %+v from %q", page, out)
	}

	out = mustCLI(t, base, "jobs", "get", "1")
	for _, want := range []string{"kind:", "email.send", "priority:", "2", `{"to":"a@example.com"}`, "welcome"} {
		if !strings.Contains(out, want) {
			t.Fatalf("jobs get is missing %q:\n%s", want, out)
		}
	}
	if out := mustCLI(t, base, "jobs", "cancel", "1"); out != "job 1 is cancelled\n" {
		t.Fatalf("cancel printed %q", out)
	}
	if out := mustCLI(t, base, "jobs", "retry", "1"); out != "job 1 is available\n" {
		t.Fatalf("retry printed %q", out)
	}
	if out := mustCLI(t, base, "jobs", "rm", "1"); out != "deleted job 1\n" {
		t.Fatalf("rm printed %q", out)
	}
	_, _, err := cli(t, base, "jobs", "get", "1")
	if err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("get of a deleted job: %v", err)
	}

	if out := mustCLI(t, base, "queues", "pause", "mail"); out != "queue mail is paused\n" {
		t.Fatalf("pause printed %q", out)
	}
	out = mustCLI(t, base, "queues", "ls")
	if !strings.Contains(out, "mail") || !strings.Contains(out, "true") {
		t.Fatalf("queues ls after pause:\n%s", out)
	}
	var qs struct {
		Queues []struct {
			Name   string         `json:"name"`
			Paused bool           `json:"paused"`
			Counts map[string]int `json:"counts"`
		} `json:"queues"`
	}
	out = mustCLI(t, base, "queues", "resume", "mail")
	if out != "queue mail is running\n" {
		t.Fatalf("resume printed %q", out)
	}
	out = mustCLI(t, base, "queues", "ls", "-o", "json")
	if err := json.Unmarshal([]byte(out), &qs); err != nil || len(qs.Queues) != 2 {
		t.Fatalf("queues ls -o json: %v %+v", err, qs)
	}
	for _, q := range qs.Queues {
		if q.Paused {
			t.Fatalf("queue %s still paused", q.Name)
		}
	}
}

func TestClientCommandErrors(t *testing.T) {
	t.Parallel()
	base := startServer(t)
	var ue *usageError
	cases := []struct {
		name  string
		args  []string
		usage bool
		text  string
	}{
		{"invalid args JSON", []string{"enqueue", "k", "{nope"}, true, "not valid JSON"},
		{"invalid kind", []string{"enqueue", "bad kind"}, false, "invalid_argument"},
		{"bad job id", []string{"jobs", "get", "abc"}, true, "positive integer"},
		{"missing job id", []string{"jobs", "cancel"}, true, "one job ID"},
		{"unknown job", []string{"jobs", "cancel", "424242"}, false, "not_found"},
		{"bad output format", []string{"queues", "ls", "-o", "yaml"}, true, "table or json"},
	}
	for _, c := range cases {
		_, _, err := cli(t, base, c.args...)
		if err == nil {
			t.Fatalf("%s: no error", c.name)
		}
		if errors.As(err, &ue) != c.usage {
			t.Fatalf("%s: usage error = %v, want %v (%v)", c.name, errors.As(err, &ue), c.usage, err)
		}
		if !strings.Contains(err.Error(), c.text) {
			t.Fatalf("%s: error %q does not mention %q", c.name, err, c.text)
		}
	}
	// A server that is not there is a failed operation (exit 1), with one line.
	if got := run([]string{"queues", "ls", "--server", "http://127.0.0.1:1"}); got != exitFail {
		t.Fatalf("unreachable server: exit %d, want %d", got, exitFail)
	}
	if got := run([]string{"jobs", "get", "x", "--server", base}); got != exitUsage {
		t.Fatalf("bad id: exit %d, want %d", got, exitUsage)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
