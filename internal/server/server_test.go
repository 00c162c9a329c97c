package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/server"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stopDeadline bounds how long a graceful stop may take in these tests.
const stopDeadline = 10 * time.Second

// testConfig returns a valid configuration on a fresh data directory and
// port 0.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NoSync = true
	cfg.ShutdownTimeout = 5 * time.Second
	return cfg
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// running is a server serving on a loopback listener in a goroutine.
type running struct {
	srv  *server.Server
	url  string
	stop context.CancelFunc
	done chan error // receives Serve's result once
}

// serve creates a server on cfg and runs Serve on 127.0.0.1:0 until the
// test ends or wait is called.
func serve(t *testing.T, cfg config.Config) *running {
	t.Helper()
	srv, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{srv: srv, url: "http://" + ln.Addr().String(), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done: //nolint:errcheck // a test that cares about Serve's result reads it with wait
		case <-time.After(stopDeadline):
			t.Errorf("Serve did not return within %s of the test's end", stopDeadline)
		}
	})
	return r
}

// wait cancels Serve's context and returns its result, failing the test
// if it takes longer than stopDeadline.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(stopDeadline):
		t.Fatalf("Serve did not return within %s of its context ending", stopDeadline)
		return nil
	}
}

// get fetches url with a client that keeps no idle connections (so no
// goroutine outlives the test) and decodes the JSON body.
func get(t *testing.T, url string) (int, map[string]string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q, want application/json", url, ct)
	}
	var body map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: decode body: %v", url, err)
	}
	return resp.StatusCode, body
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	code, body := get(t, r.url+"/healthz")
	if code != http.StatusOK || body["status"] != "ok" || len(body) != 1 {
		t.Errorf("GET /healthz = %d %v, want 200 {\"status\":\"ok\"}", code, body)
	}
}

func TestReadyzWhileServing(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	code, body := get(t, r.url+"/readyz")
	if code != http.StatusOK || body["status"] != "ready" {
		t.Errorf("GET /readyz = %d %v, want 200 {\"status\":\"ready\"}", code, body)
	}
}

func TestReadyzIsUnavailableOnceStoreClosed(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	if code, body := get(t, r.url+"/readyz"); code != http.StatusOK {
		t.Fatalf("GET /readyz before Close = %d %v, want 200", code, body)
	}
	if err := r.srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Serve is still running, so only the store's Ping can make it unready.
	code, body := get(t, r.url+"/readyz")
	if code != http.StatusServiceUnavailable || body["status"] != "not ready" || !strings.HasPrefix(body["reason"], "store: ") {
		t.Errorf("GET /readyz after Close = %d %v, want 503 not ready with a store reason", code, body)
	}
	// Healthz is liveness, not readiness: the process still answers.
	if code, body := get(t, r.url+"/healthz"); code != http.StatusOK {
		t.Errorf("GET /healthz after Close = %d %v, want 200", code, body)
	}
	if err := r.wait(t); err != nil {
		t.Errorf("Serve after an earlier Close = %v, want nil", err)
	}
}

func TestHandlerIsNotReadyBeforeServe(t *testing.T) {
	t.Parallel()
	srv, err := server.New(testConfig(t), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	if code, body := get(t, hs.URL+"/healthz"); code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("GET /healthz = %d %v, want 200 ok", code, body)
	}
	// Serve has not started the background services, so the node must
	// not take traffic from a load balancer yet.
	if code, body := get(t, hs.URL+"/readyz"); code != http.StatusServiceUnavailable || body["status"] != "not ready" {
		t.Errorf("GET /readyz before Serve = %d %v, want 503 not ready", code, body)
	}
}

func TestServeStopsOnCancelAndReleasesStore(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	r := serve(t, cfg)
	if code, _ := get(t, r.url+"/healthz"); code != http.StatusOK {
		t.Fatalf("GET /healthz = %d, want 200", code)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Serve after cancel = %v, want nil", err)
	}
	// The listener is closed.
	if conn, err := net.DialTimeout("tcp", strings.TrimPrefix(r.url, "http://"), time.Second); err == nil {
		conn.Close()
		t.Error("dial after Serve returned succeeded, want the listener closed")
	}
	// The store is closed and the data directory released.
	again, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatalf("server.New on the same data dir after Serve returned: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

func TestNewRefusesDataDirOfRunningServer(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	serve(t, cfg)
	second, err := server.New(cfg, discardLogger())
	if err == nil {
		second.Close()
		t.Fatal("second server.New on a data dir in use = nil error, want ErrLocked")
	}
	if !errors.Is(err, sqlitestore.ErrLocked) {
		t.Errorf("second server.New error = %v, want errors.Is ErrLocked", err)
	}
	if !strings.Contains(err.Error(), cfg.DataDir) {
		t.Errorf("second server.New error %q does not name the data dir %s", err, cfg.DataDir)
	}
}

// TestServeOnPostgres runs the production assembly on PostgreSQL: the
// data directory is never touched, the API works, and the node elects
// itself leader (it is alone) and says so in /metrics.
func TestServeOnPostgres(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	cfg := testConfig(t)
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.DatabaseURL = url
	cfg.DatabaseSchema = pgtest.TestSchema(t, url)
	cfg.NodeID = "node-1"
	r := serve(t, cfg)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(r.url+"/v1/jobs", "application/json", strings.NewReader(`{"kind":"k","queue":"pgq"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/jobs = %d, want 201", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(r.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body := string(b)
		if strings.Contains(body, "drover_leader 1") {
			for _, want := range []string{`drover_jobs{queue="pgq",state="available"} 1`, `drover_pg_pool_max_connections`} {
				if !strings.Contains(body, want) {
					t.Errorf("/metrics lacks %q", want)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never became leader; /metrics:\n%s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(t, r.url+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz = %d %v", code, body)
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, statErr := os.Stat(cfg.DataDir); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("data dir %s exists after a PostgreSQL run (stat: %v), want it untouched", cfg.DataDir, statErr)
	}
}

// TestNewReportsUnreachableDatabase: a database that does not answer is a
// clear error at start that never shows the URL's password.
func TestNewReportsUnreachableDatabase(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = "postgres://drover:s3cret-pw@127.0.0.1:1/drover?connect_timeout=5"
	srv, err := server.New(cfg, discardLogger())
	if err == nil {
		srv.Close()
		t.Fatal("server.New with an unreachable database = nil error")
	}
	if !strings.Contains(err.Error(), "PostgreSQL") {
		t.Errorf("error %q does not mention PostgreSQL", err)
	}
	if strings.Contains(err.Error(), "s3cret-pw") {
		t.Errorf("error %q shows the password", err)
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Addr = "nonsense"
	cfg.LogFormat = "xml"
	srv, err := server.New(cfg, discardLogger())
	if err == nil {
		srv.Close()
		t.Fatal("server.New with an invalid config = nil error, want one")
	}
	for _, want := range []string{"addr", "log_format"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("server.New error %q does not mention %s", err, want)
		}
	}
}

func TestServeReturnsListenerErrorAndClosesStore(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	srv, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(t.Context(), ln) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve on a closed listener = nil, want an error")
		}
	case <-time.After(stopDeadline):
		t.Fatalf("Serve on a closed listener did not return within %s", stopDeadline)
	}
	again, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatalf("server.New on the same data dir after Serve failed: %v", err)
	}
	again.Close()
}

func TestListen(t *testing.T) {
	t.Parallel()
	srv, err := server.New(testConfig(t), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ln, err := srv.Listen()
	if err != nil {
		t.Fatalf("Listen on 127.0.0.1:0: %v", err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() || addr.Port == 0 {
		t.Errorf("Listen address = %s, want a loopback address with a port", addr)
	}

	// A busy address is an error naming it.
	cfg := testConfig(t)
	cfg.Addr = ln.Addr().String()
	busy, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	ln2, err := busy.Listen()
	if err == nil {
		ln2.Close()
		t.Fatalf("Listen on busy %s = nil error, want one", cfg.Addr)
	}
	if !strings.Contains(err.Error(), cfg.Addr) {
		t.Errorf("Listen error %q does not name %s", err, cfg.Addr)
	}
}

func TestCloseTwice(t *testing.T) {
	t.Parallel()
	srv, err := server.New(testConfig(t), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestNonLoopbackNeedsTokenOrInsecure checks the exposure rule at start: a
// non-loopback address is refused while the store has no token, and
// accepted once one exists.
func TestNonLoopbackNeedsTokenOrInsecure(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Addr = "0.0.0.0:0"
	if srv, err := server.New(cfg, discardLogger()); !errors.Is(err, config.ErrExposed) {
		if srv != nil {
			srv.Close()
		}
		t.Fatalf("non-loopback without tokens: %v, want ErrExposed", err)
	}
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateToken(t.Context(), store.CreateTokenParams{Now: time.Now(), Name: "t", Scope: "admin", Hash: "h"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	srv, err := server.New(cfg, discardLogger())
	if err != nil {
		t.Fatalf("non-loopback with a token: %v", err)
	}
	srv.Close()
}

// TestStopEndsWaitingLeases checks that a long-poll lease waiting for jobs
// does not hold up a graceful stop: it answers with no jobs, and Serve
// returns long before the lease's wait (or the shutdown timeout) is over.
func TestStopEndsWaitingLeases(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.ShutdownTimeout = 30 * time.Second
	r := serve(t, cfg)
	type answer struct {
		code int
		body string
		err  error
	}
	answered := make(chan answer, 1)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		resp, err := client.Post(r.url+"/v1/lease", "application/json", strings.NewReader(`{"queues":["q"],"wait":"60s"}`))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answered <- answer{code: resp.StatusCode, body: string(b)}
	}()
	// Wait until the lease is waiting: the admission slot is taken.
	deadline := time.Now().Add(10 * time.Second)
	for r.srv.Engine().Waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the lease never started waiting")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	start := time.Now()
	if err := r.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("stop took %s with a lease waiting", took)
	}
	a := <-answered
	if a.err != nil || a.code != http.StatusOK || !strings.Contains(a.body, `"jobs":[]`) {
		t.Fatalf("the waiting lease got %d %q %v, want 200 with no jobs", a.code, a.body, a.err)
	}
}

// TestMetrics checks that /metrics serves the Prometheus text format with
// the job counts per queue and state (zeros included), the HTTP requests
// by route pattern, and the store's writer counters.
func TestMetrics(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Post(r.url+"/v1/jobs", "application/json", strings.NewReader(`{"kind":"k","queue":"mail"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = client.Get(r.url + "/v1/jobs/1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = client.Get(r.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		`drover_jobs{queue="mail",state="available"} 1`,
		`drover_jobs{queue="mail",state="completed"} 0`,
		`drover_queue_paused{queue="mail"} 0`,
		`drover_http_requests_total{code="201",method="POST",route="POST /v1/jobs"} 1`,
		`drover_http_requests_total{code="200",method="GET",route="GET /v1/jobs/{id}"} 1`,
		`drover_lease_waiters 0`,
		`drover_event_subscribers 0`,
		`drover_store_commits_total`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestDebugAddrServesProfiler checks that --debug-addr serves Go's
// profiler on its own address, and that the API port does not.
func TestDebugAddrServesProfiler(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // a free port for the profiler
	cfg := testConfig(t)
	cfg.DebugAddr = addr
	r := serve(t, cfg)
	// The profiler starts before readiness turns on: wait for readyz.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(t, r.url+"/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("server never became ready")
		}
		time.Sleep(5 * time.Millisecond) // polling with a deadline
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get("http://" + addr + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("profiler index: %d", resp.StatusCode)
	}
	resp, err = client.Get(r.url + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("profiler on the API port: %d, want 404", resp.StatusCode)
	}
}
