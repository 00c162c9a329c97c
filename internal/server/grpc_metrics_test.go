package server_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/server"
)

// lockedBuffer is a bytes.Buffer that a logger and a test can share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// scrape returns the /metrics text of the server at base.
func scrape(t *testing.T, base string) string {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sample returns the value text of the sample line name{labels} in the
// metrics text, "" when there is none. labels are in the text format's
// order (sorted by name).
func sample(text, series string) string {
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			return strings.TrimSpace(rest)
		}
	}
	return ""
}

// TestGRPCMetrics checks that gRPC, gRPC-Web and Connect calls are counted
// in drover_grpc_requests_total by procedure and the gRPC code the client
// saw, whatever the protocol and wherever the code was decided (the
// handler, Connect before the handler, the health service), that made-up
// procedures share one label value, and that none of these calls is
// counted as an HTTP status in drover_http_requests_total.
func TestGRPCMetrics(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := grpcGoConn(t, r.url)
	c := newIdemClients(t, r)
	web := droverv1connect.NewJobServiceClient(c.httpCli, r.url, connect.WithGRPCWeb())

	// OK and NOT_FOUND through grpc-go.
	if err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, &droverv1.EnqueueRequest{Kind: "k"}, &droverv1.EnqueueResponse{}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Invoke(ctx, droverv1connect.JobServiceGetJobProcedure, &droverv1.GetJobRequest{Id: 1 << 40}, &droverv1.GetJobResponse{}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetJob of a missing job: %v, want NOT_FOUND", err)
	}
	// NOT_FOUND over the Connect protocol (HTTP 404) and gRPC-Web (HTTP
	// 200, the code in trailers).
	for name, cl := range map[string]droverv1connect.JobServiceClient{"connect": c.json, "grpc-web": web} {
		if _, err := cl.GetJob(ctx, connect.NewRequest(&droverv1.GetJobRequest{Id: 1 << 40})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("GetJob over %s: %v, want NOT_FOUND", name, err)
		}
	}
	// INVALID_ARGUMENT from the handler, through grpc-go.
	if err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, &droverv1.EnqueueRequest{Kind: "bad kind"}, &droverv1.EnqueueResponse{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Enqueue of a bad kind: %v, want INVALID_ARGUMENT", err)
	}
	// A Connect request that Connect itself refuses before the handler:
	// a field the contract does not know.
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url+droverv1connect.JobServiceEnqueueProcedure, strings.NewReader(`{"kind":"k","nope":1}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.httpCli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("Connect Enqueue with an unknown field: HTTP %d, want 400", resp.StatusCode)
	}
	// The health service, and two procedures that do not exist.
	if _, err := grpc_health_v1.NewHealthClient(conn).Check(ctx, &grpc_health_v1.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/drover.v1.JobService/Nope", "/drover.v1.JobService/Nope2"} {
		if err := conn.Invoke(ctx, p, &droverv1.GetJobRequest{Id: 1}, &droverv1.GetJobResponse{}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: %v, want UNIMPLEMENTED", p, err)
		}
	}

	text := scrape(t, r.url)
	for series, want := range map[string]string{
		`drover_grpc_requests_total{code="OK",procedure="/drover.v1.JobService/Enqueue"}`:               "1",
		`drover_grpc_requests_total{code="INVALID_ARGUMENT",procedure="/drover.v1.JobService/Enqueue"}`: "2",
		`drover_grpc_requests_total{code="NOT_FOUND",procedure="/drover.v1.JobService/GetJob"}`:         "3",
		`drover_grpc_requests_total{code="OK",procedure="/grpc.health.v1.Health/Check"}`:                "1",
		`drover_grpc_requests_total{code="UNIMPLEMENTED",procedure="unknown"}`:                          "2",
		`drover_grpc_request_duration_seconds_count{procedure="/drover.v1.JobService/GetJob"}`:          "3",
	} {
		if got := sample(text, series); got != want {
			t.Errorf("%s = %q, want %q", series, got, want)
		}
	}
	for line := range strings.Lines(text) {
		if strings.HasPrefix(line, "drover_http_request") && (strings.Contains(line, `route="/drover.v1.`) || strings.Contains(line, `route="/grpc.`)) {
			t.Errorf("a gRPC call is counted as an HTTP request: %s", strings.TrimSpace(line))
		}
		if strings.HasPrefix(line, "drover_grpc_requests_total{") && !strings.Contains(line, `procedure="/drover.v1.`) &&
			!strings.Contains(line, `procedure="/grpc.`) && !strings.Contains(line, `procedure="unknown"`) {
			t.Errorf("a procedure label outside the face's procedures: %s", strings.TrimSpace(line))
		}
	}
}

// TestCancelledRESTCallIs499 checks that a REST call whose client goes
// away is counted under 499, not as the 500 its handler answered, and is
// not logged as an error.
func TestCancelledRESTCallIs499(t *testing.T) {
	t.Parallel()
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := server.New(testConfig(t), log)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(stopDeadline):
			t.Errorf("Serve did not return within %s", stopDeadline)
		}
	})
	base := "http://" + ln.Addr().String()

	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/lease", strings.NewReader(`{"queues":["idle"],"wait":"30s"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	called := make(chan struct{})
	go func() {
		defer close(called)
		if resp, err := (&http.Client{Transport: tr}).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for srv.Engine().Waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the lease call never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-called
	const series = `drover_http_requests_total{code="499",method="POST",route="POST /v1/lease"}`
	var text string
	for {
		text = scrape(t, base)
		if sample(text, series) == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s 1 in /metrics:\n%s", series, text)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if strings.Contains(text, `code="500"`) {
		t.Errorf("a 500 was counted for the abandoned call:\n%s", text)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("the abandoned call was logged as an error:\n%s", logs.String())
	}
}
