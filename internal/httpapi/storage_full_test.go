package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"
)

// TestStorageFullIs507 enqueues over REST on an embedded store whose disk
// is full: the answer is 507 with the stable code storage_full and nothing
// is stored; once space returns the same request succeeds.
func TestStorageFullIs507(t *testing.T) {
	t.Parallel()
	faults := sqlitevfs.NewFaults()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	eng, err := engine.New(engine.Config{Store: st, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{Logger: discardLogger()})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	enqueue := func() (int, http.Header, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/v1/jobs", strings.NewReader(`{"kind":"k","args":{"n":1}}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, body
	}

	faults.SetSpace(0)
	status, header, body := enqueue()
	if status != http.StatusInsufficientStorage {
		t.Fatalf("enqueue on a full disk: %d %v, want 507", status, body)
	}
	if body["code"] != "storage_full" || body["type"] != "urn:drover:problem:storage_full" {
		t.Fatalf("problem %v, want code storage_full", body)
	}
	if ct := header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	if ra := header.Get("Retry-After"); ra != "" {
		t.Fatalf("Retry-After %q on a full disk: waiting alone does not free space", ra)
	}
	faults.SetSpace(-1)
	status, _, body = enqueue()
	if status != http.StatusCreated {
		t.Fatalf("enqueue once space returned: %d %v, want 201", status, body)
	}
	if id, _ := body["id"].(float64); id != 1 {
		t.Fatalf("job id %v, want 1: the refused enqueue stored nothing", body["id"])
	}
}
