package faultproxy_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/testenv/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo is an HTTP server that answers every request with its body and
// counts the requests it handled.
type echo struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newEcho(t *testing.T) *echo {
	t.Helper()
	e := &echo{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		e.hits.Add(1)
		w.Header().Set("X-Echo", "1")
		w.Write(b) //nolint:errcheck // the client may have gone
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func startProxy(t *testing.T, upstream string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(upstream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// post sends body to url on a fresh connection and returns the answer's
// body, or the error the client saw.
func post(t *testing.T, hc *http.Client, url, body string) (string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// fresh is a client that opens a connection per request, so that no
// request is retried on a reused connection by the transport itself.
func fresh(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true}}
}

func TestPassForwardsBothWays(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	for i := range 3 { // the same kept-alive connection, then more
		got, err := post(t, hc, p.URL(), strings.Repeat("x", 100_000))
		if err != nil || len(got) != 100_000 {
			t.Fatalf("request %d through Pass: %d bytes, %v", i, len(got), err)
		}
	}
	if e.hits.Load() != 3 || p.Dropped() != 0 {
		t.Fatalf("hits %d, dropped %d; want 3, 0", e.hits.Load(), p.Dropped())
	}
}

func TestDelayHoldsTraffic(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	p.SetDelay(200 * time.Millisecond)
	p.SetMode(faultproxy.Delay)
	start := time.Now()
	got, err := post(t, fresh(30*time.Second), p.URL(), "hello")
	// The request and the answer each wait at least once: a lower bound
	// only, which a slow machine cannot break.
	if err != nil || got != "hello" || time.Since(start) < 400*time.Millisecond {
		t.Fatalf("through Delay: %q, %v after %s", got, err, time.Since(start))
	}
}

func TestBlackholeSwallowsUntilHealed(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	if _, err := post(t, hc, p.URL(), "before"); err != nil {
		t.Fatal(err)
	}
	// The partition cuts the kept-alive connection as well as new ones.
	p.SetMode(faultproxy.Blackhole)
	short := &http.Client{Timeout: 500 * time.Millisecond, Transport: hc.Transport}
	if _, err := post(t, short, p.URL(), "kept-alive"); !isTimeout(err) {
		t.Fatalf("kept-alive connection through Blackhole: %v, want a timeout", err)
	}
	if _, err := post(t, fresh(500*time.Millisecond), p.URL(), "new"); !isTimeout(err) {
		t.Fatalf("new connection through Blackhole: %v, want a timeout", err)
	}
	if n := e.hits.Load(); n != 1 {
		t.Fatalf("the server handled %d requests, want only the one before the partition", n)
	}
	p.SetMode(faultproxy.Pass)
	if got, err := post(t, fresh(30*time.Second), p.URL(), "after"); err != nil || got != "after" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestDropResponsesAfterTheServerActed(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	p.SetMode(faultproxy.DropResponses)
	_, err := post(t, fresh(30*time.Second), p.URL(), "lost answer")
	if err == nil {
		t.Fatal("a dropped response reached the client")
	}
	if isTimeout(err) {
		t.Fatalf("a dropped response should cut the connection at once, not time out: %v", err)
	}
	if n := e.hits.Load(); n != 1 {
		t.Fatalf("the server handled %d requests, want 1: the request must reach it", n)
	}
	got, err := p.WaitDropped(t.Context(), 1)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(got[0])), nil)
	if err != nil {
		t.Fatalf("captured response %q: %v", got[0], err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Echo") != "1" || string(body) != "lost answer" {
		t.Fatalf("captured %d %v %q", resp.StatusCode, resp.Header, body)
	}
}

func TestDropNextResponsesThenPass(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	p.DropNextResponses(2)
	hc := fresh(30 * time.Second)
	for i := range 2 {
		if _, err := post(t, hc, p.URL(), "x"); err == nil {
			t.Fatalf("response %d was not dropped", i)
		}
	}
	if got, err := post(t, hc, p.URL(), "third"); err != nil || got != "third" {
		t.Fatalf("the third response: %q, %v; want it to pass", got, err)
	}
	if _, err := p.WaitDropped(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	if e.hits.Load() != 3 || p.Dropped() != 2 {
		t.Fatalf("hits %d, dropped %d; want 3, 2", e.hits.Load(), p.Dropped())
	}
}

func TestResetCutsNewAndOpenConnections(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p := startProxy(t, e.srv.Listener.Addr().String())
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	if _, err := post(t, hc, p.URL(), "before"); err != nil {
		t.Fatal(err)
	}
	p.SetMode(faultproxy.Reset)
	if _, err := post(t, fresh(30*time.Second), p.URL(), "new"); err == nil || isTimeout(err) {
		t.Fatalf("new connection through Reset: %v, want a connection error", err)
	}
	// A request with a body is not retried by the transport.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL(), strings.NewReader("open"))
	req.GetBody = nil
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a request on an open connection passed through Reset")
	}
	if n := e.hits.Load(); n != 1 {
		t.Fatalf("the server handled %d requests, want 1", n)
	}
}

func TestCloseEndsOpenConnections(t *testing.T) {
	t.Parallel()
	e := newEcho(t)
	p, err := faultproxy.Start(e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p.SetMode(faultproxy.Blackhole)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) //nolint:errcheck // only bounds the read
	if n, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read after Close: %d bytes, %v; want the connection closed", n, err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts after Close")
	}
}
