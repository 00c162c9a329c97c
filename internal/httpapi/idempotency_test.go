package httpapi_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

func idemServer(t *testing.T) string {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(mux, eng, httpapi.Options{})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

func postKey(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	base := idemServer(t)
	code1, body1 := postKey(t, base+"/v1/jobs", "order-7", `{"kind":"charge","args":{"amount":5,"currency":"EUR"}}`)
	if code1 != 201 {
		t.Fatalf("first: %d %s", code1, body1)
	}
	// The same request again, and in another key order and spacing: the
	// first response, byte for byte, and nothing more enqueued.
	for _, body := range []string{`{"kind":"charge","args":{"amount":5,"currency":"EUR"}}`, `{ "args": {"currency":"EUR", "amount":5}, "kind":"charge" }`} {
		code, got := postKey(t, base+"/v1/jobs", "order-7", body)
		if code != code1 || got != body1 {
			t.Fatalf("repeat: %d %s, want %d %s", code, got, code1, body1)
		}
	}
	// Another body with the same key is refused and changes nothing.
	code, got := postKey(t, base+"/v1/jobs", "order-7", `{"kind":"charge","args":{"amount":6}}`)
	if code != 422 || !strings.Contains(got, `"code":"idempotency_mismatch"`) {
		t.Fatalf("mismatch: %d %s", code, got)
	}
	// A batch with a key, and a key that is too long or has spaces.
	code, b1 := postKey(t, base+"/v1/jobs/batch", "batch-1", `{"jobs":[{"kind":"a"},{"kind":"b"}]}`)
	if code != 201 {
		t.Fatalf("batch: %d %s", code, b1)
	}
	if code, b2 := postKey(t, base+"/v1/jobs/batch", "batch-1", `{"jobs":[{"kind":"a"},{"kind":"b"}]}`); code != 201 || b2 != b1 {
		t.Fatalf("batch repeat: %d %s", code, b2)
	}
	// The same key on the other route is another request.
	if code, _ := postKey(t, base+"/v1/jobs", "batch-1", `{"kind":"a"}`); code != 422 {
		t.Fatalf("key reused across routes: %d", code)
	}
	if code, _ := postKey(t, base+"/v1/jobs", "has space", `{"kind":"a"}`); code != 422 {
		t.Fatalf("key with a space: %d", code)
	}
	resp, err := http.Get(base + "/v1/queues")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	sb.Write(buf[:n])
	if !strings.Contains(sb.String(), `"available":3`) {
		t.Fatalf("after the repeats, queues: %s (want 3 jobs: one charge and one batch of two)", sb.String())
	}
}
