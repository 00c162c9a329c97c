package server_test

import (
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/server"
)

// TestServeSetsAndRestoresMemoryLimit checks that a server with a memory
// limit sets the Go runtime's soft limit to 7/8 of it while it serves,
// and gives the previous limit back when it stops.
//
//nolint:paralleltest // the runtime's memory limit is the process's
func TestServeSetsAndRestoresMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	cfg := testConfig(t)
	cfg.MemoryLimit = 256 << 20
	r := serve(t, cfg)
	if code, _ := get(t, r.url+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz = %d", code)
	}
	if got, want := debug.SetMemoryLimit(-1), int64(224<<20); got != want {
		t.Errorf("while serving, the runtime's memory limit is %d, want %d (7/8 of %s)", got, want, cfg.MemoryLimit)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if got := debug.SetMemoryLimit(-1); got != prev {
		t.Errorf("after the stop, the runtime's memory limit is %d, want the previous %d", got, prev)
	}
}

// TestReadHeaderTimeoutClosesSlowClients sends half a request line and
// checks that the server closes the connection once ReadHeaderTimeout has
// passed, not before, answering nothing or a 4xx.
func TestReadHeaderTimeoutClosesSlowClients(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ReadHeaderTimeout = 300 * time.Millisecond
	r := serve(t, cfg)
	start := time.Now()
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("POST /v1/jo")); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(stopDeadline)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("the server kept the connection open for %s: %v", took, err)
	}
	if len(got) > 0 && !strings.HasPrefix(string(got), "HTTP/1.1 4") {
		t.Errorf("the server answered %q to an unfinished request", got)
	}
	if took < cfg.ReadHeaderTimeout {
		t.Errorf("closed after %s, before the %s header timeout", took, cfg.ReadHeaderTimeout)
	}
}

// TestNewRefusesTooSmallMemoryLimit checks that the memory limit is
// validated before anything opens.
func TestNewRefusesTooSmallMemoryLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MemoryLimit = config.MinMemoryLimit - 1
	srv, err := server.New(cfg, discardLogger())
	if err == nil {
		srv.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Errorf("New with memory_limit %s = %v, want an error naming memory_limit", cfg.MemoryLimit, err)
	}
}
