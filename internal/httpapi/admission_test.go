package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
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
	srv := httptest.NewServer(httpapi.NewAdmission(2, 1).Wrap(block))
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
