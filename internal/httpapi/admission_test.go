package httpapi_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/droverhq/drover/internal/httpapi"
)

// TestAdmissionRefusesBeyondLimit fills the request limit with handlers
// that block, and checks that the next request gets 429 with Retry-After
// and a problem body, that leases have their own limit, and that health
// checks pass regardless.
func TestAdmissionRefusesBeyondLimit(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var entered sync.WaitGroup
	block := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("block") == "1" {
			entered.Done()
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := httptest.NewServer(httpapi.NewAdmission(httpapi.AdmissionLimits{MaxRequests: 2, MaxLeases: 1}).Wrap(block))
	defer srv.Close()
	var wg sync.WaitGroup
	for _, path := range []string{"/v1/jobs?block=1", "/v1/jobs?block=1", "/v1/lease?block=1"} {
		entered.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(srv.URL + path)
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	entered.Wait()
	for _, path := range []string{"/v1/jobs", "/v1/lease"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var p struct {
			Code   string `json:"code"`
			Status int    `json:"status"`
		}
		json.NewDecoder(resp.Body).Decode(&p) //nolint:errcheck // checked below
		resp.Body.Close()
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
			p.Code != "overloaded" || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s at the limit: %d, Retry-After %q, code %q", path, resp.StatusCode, resp.Header.Get("Retry-After"), p.Code)
		}
	}
	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz refused at the limit: %d", resp.StatusCode)
	}
	close(release)
	wg.Wait()
	resp, err = http.Get(srv.URL + "/v1/jobs")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("after the load, %d", resp.StatusCode)
	}
}

// admissionPost sends a POST with body (of unknown length when chunked)
// and returns the status and the Retry-After header.
func admissionPost(t *testing.T, url, body string, chunked bool) (int, string) {
	t.Helper()
	var rd io.Reader = strings.NewReader(body)
	if chunked {
		rd = io.MultiReader(rd) // hides the length: sent chunked
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestAdmissionBoundsRequestBytes holds a 600-byte request in its handler
// under a 1,000-byte budget, and checks that another 600 bytes are
// refused with 429, that 300 bytes still fit, that a body of unknown
// length counts as UnknownLengthBytes, and that the bytes are given back
// when the requests end.
func TestAdmissionBoundsRequestBytes(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) //nolint:errcheck // the body is not the point
		if r.URL.Query().Get("block") == "1" {
			entered <- struct{}{}
			<-release
		}
		w.WriteHeader(http.StatusOK)
	})
	srv := httptest.NewServer(httpapi.NewAdmission(httpapi.AdmissionLimits{MaxBytes: 1000, UnknownLengthBytes: 500}).Wrap(handler))
	defer srv.Close()
	done := make(chan int, 1)
	go func() {
		code, _ := admissionPost(t, srv.URL+"/v1/jobs?block=1", strings.Repeat("x", 600), false)
		done <- code
	}()
	<-entered
	tests := []struct {
		name    string
		size    int
		chunked bool
		want    int
	}{
		{"600 more bytes pass the budget", 600, false, http.StatusTooManyRequests},
		{"300 more bytes fit", 300, false, http.StatusOK},
		{"unknown length counts 500", 10, true, http.StatusTooManyRequests},
		{"no body always fits", 0, false, http.StatusOK},
	}
	for _, tt := range tests {
		code, retry := admissionPost(t, srv.URL+"/v1/jobs", strings.Repeat("x", tt.size), tt.chunked)
		if code != tt.want {
			t.Errorf("%s: status %d, want %d", tt.name, code, tt.want)
		}
		if code == http.StatusTooManyRequests && retry == "" {
			t.Errorf("%s: 429 without Retry-After", tt.name)
		}
	}
	close(release)
	if code := <-done; code != http.StatusOK {
		t.Fatalf("the held request ended with %d", code)
	}
	// All given back: the largest request fits again, and one larger
	// than the whole budget is admitted alone.
	for _, size := range []int{1000, 5000} {
		if code, _ := admissionPost(t, srv.URL+"/v1/jobs", strings.Repeat("x", size), false); code != http.StatusOK {
			t.Errorf("%d bytes after the load: status %d, want 200", size, code)
		}
	}
}

// TestAdmissionRefusesNearMemoryLimit checks that a live heap above
// MaxLiveHeap makes every /v1 request 429 while health checks pass, and
// that a limit far above the heap admits them.
func TestAdmissionRefusesNearMemoryLimit(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })
	tests := []struct {
		name  string
		limit int64
		want  int
	}{
		{"heap above the limit", 1, http.StatusTooManyRequests},
		{"heap far below the limit", 1 << 50, http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(httpapi.NewAdmission(httpapi.AdmissionLimits{MaxLiveHeap: tt.limit}).Wrap(ok))
			defer srv.Close()
			for _, path := range []string{"/v1/jobs", "/v1/lease"} {
				code, retry := admissionPost(t, srv.URL+path, "{}", false)
				if code != tt.want || (code == http.StatusTooManyRequests && retry == "") {
					t.Errorf("%s: status %d, Retry-After %q; want %d", path, code, retry, tt.want)
				}
			}
			code, _ := admissionPost(t, srv.URL+"/healthz", "", false)
			if code != http.StatusOK {
				t.Errorf("/healthz: status %d, want 200 whatever the memory", code)
			}
		})
	}
}
