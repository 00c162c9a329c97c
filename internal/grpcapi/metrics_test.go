package grpcapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
)

// TestRoutesAndProcedures checks IsRoute and Procedure against the mux
// that Mount fills: every procedure served is its own label and is served
// under a pattern that IsRoute knows, so that the server counts it as a
// gRPC call; other paths are not the face's, or share one label.
func TestRoutesAndProcedures(t *testing.T) {
	t.Parallel()
	mux := http.NewServeMux()
	New(nil, Options{}).Mount(mux)
	patternOf := func(path string) string {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, path, strings.NewReader(""))
		req.Header.Set("Content-Type", "application/grpc")
		mux.ServeHTTP(httptest.NewRecorder(), req)
		return req.Pattern
	}
	if len(procedures) != len(operations)+4 {
		t.Errorf("%d procedures, want the %d of the drover.v1 services and 4 of health and reflection", len(procedures), len(operations))
	}
	for p := range procedures {
		if got := Procedure(p); got != p {
			t.Errorf("Procedure(%q) = %q", p, got)
		}
		if pat := patternOf(p); !IsRoute(pat) {
			t.Errorf("%s is served under pattern %q, which IsRoute does not know", p, pat)
		}
	}
	for _, p := range []string{"/drover.v1.JobService/Nope", "/grpc.health.v1.Health/Nope", "/v1/jobs", "/"} {
		if got := Procedure(p); got != UnknownProcedure {
			t.Errorf("Procedure(%q) = %q, want %q", p, got, UnknownProcedure)
		}
	}
	for _, pat := range []string{"", "GET /metrics", "POST /v1/jobs", "/v1/"} {
		if IsRoute(pat) {
			t.Errorf("IsRoute(%q) = true", pat)
		}
	}
}

// TestCallStatusCode checks the order in which CallStatus.Code trusts its
// sources: the grpc-status on the wire, then the interceptor's record,
// then the HTTP status.
func TestCallStatusCode(t *testing.T) {
	t.Parallel()
	recorded := func(c connect.Code) *CallStatus { return &CallStatus{code: c, set: true} }
	for _, tc := range []struct {
		name   string
		cs     *CallStatus
		status int
		header http.Header
		want   string
	}{
		{"gRPC trailer", recorded(0), 200, http.Header{http.TrailerPrefix + "Grpc-Status": {"5"}}, "NOT_FOUND"},
		{"trailers-only header", nil, 200, http.Header{"Grpc-Status": {"8"}}, "RESOURCE_EXHAUSTED"},
		{"gRPC OK", recorded(0), 200, http.Header{http.TrailerPrefix + "Grpc-Status": {"0"}}, "OK"},
		{"recorded error", recorded(connect.CodeFailedPrecondition), 400, http.Header{}, "FAILED_PRECONDITION"},
		{"recorded OK", recorded(0), 200, http.Header{}, "OK"},
		{"failed after the handler", recorded(0), 429, http.Header{}, "RESOURCE_EXHAUSTED"},
		{"refused before the handler", &CallStatus{}, 400, http.Header{}, "INVALID_ARGUMENT"},
		{"unknown method", nil, 404, http.Header{}, "UNIMPLEMENTED"},
		{"odd status", nil, 418, http.Header{}, "UNKNOWN"},
	} {
		if got := tc.cs.Code(tc.status, tc.header); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
