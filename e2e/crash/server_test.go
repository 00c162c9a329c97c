//go:build linux

package crash

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// readyDeadline bounds a start (or a recovery) to ready on a slow,
	// shared CI machine.
	readyDeadline = 60 * time.Second
	// startTries is how many ports a start tries: another process may
	// take the port between two runs of the server.
	startTries = 5
)

// server is one `drover serve` process and its restarts, on one address
// that clients read through base. Methods are safe for concurrent use.
type server struct {
	args    []string // serve's arguments, less --addr
	env     []string
	logPath string // stdout and stderr of every run, appended

	mu     sync.Mutex
	addr   string
	cmd    *exec.Cmd
	done   chan struct{} // closed when the current process has exited
	killed bool          // the current process was killed on purpose
	died   error         // set when a process exited without being killed
}

// base returns the server's URL.
func (s *server) base() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.addr
}

// freePort returns a loopback port that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// cleanEnv is the harness's environment without DROVER_* variables, plus
// extra.
func cleanEnv(extra ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "DROVER_") })
	return append(env, extra...)
}

// start runs the server and waits until /readyz answers 200. It keeps the
// address of the previous run so that clients reconnect to the same URL,
// and moves to another port only when that one is taken.
func (s *server) start(ctx context.Context) error {
	var last error
	for range startTries {
		err := s.startOnce(ctx)
		if err == nil {
			return nil
		}
		last = err
		if !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		s.mu.Lock()
		s.addr = ""
		s.mu.Unlock()
	}
	return last
}

func (s *server) startOnce(ctx context.Context) error {
	s.mu.Lock()
	if s.addr == "" {
		port, err := freePort()
		if err != nil {
			s.mu.Unlock()
			return err
		}
		s.addr = fmt.Sprintf("127.0.0.1:%d", port)
	}
	addr := s.addr
	s.mu.Unlock()
	logf, err := os.OpenFile(s.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	fmt.Fprintf(logf, "=== crash harness: start on %s at %s\n", addr, time.Now().UTC().Format(time.RFC3339Nano))
	cmd := exec.Command(droverBin, append(slices.Clone(s.args), "--addr", addr)...)
	cmd.Env = s.env
	cmd.Stdout, cmd.Stderr = logf, logf
	// Should the test binary die (a timeout), its servers die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start drover: %w", err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done, s.killed = cmd, done, false
	s.mu.Unlock()
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		if !s.killed && s.cmd == cmd && s.died == nil {
			s.died = fmt.Errorf("drover serve exited by itself: %w", err)
		}
		s.mu.Unlock()
		close(done)
	}()
	if err := waitReady(ctx, "http://"+addr, done); err != nil {
		s.kill()
		if tail := logTail(s.logPath, 2000); tail != "" {
			err = fmt.Errorf("%w; server log ends:\n%s", err, tail)
		}
		s.mu.Lock()
		s.died = nil // not a crash of a running server: the start failed
		s.mu.Unlock()
		return err
	}
	return nil
}

// kill sends SIGKILL to the running process, if any, and waits until it
// has exited. It reports whether a process was running.
func (s *server) kill() bool {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	if cmd == nil {
		s.mu.Unlock()
		return false
	}
	s.killed = true
	s.cmd = nil
	s.mu.Unlock()
	cmd.Process.Kill() //nolint:errcheck // it may have exited already; done tells
	<-done
	return true
}

// err reports a process that exited without being killed.
func (s *server) err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.died
}

var errExited = errors.New("drover serve exited before it was ready")

// waitReady polls base/readyz until it answers 200.
func waitReady(ctx context.Context, base string, done <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, readyDeadline)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-done:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("%s/readyz not ready after %s (last: %w)", base, readyDeadline, last)
		case <-tick.C:
		}
	}
}

// logTail returns the last n bytes of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
