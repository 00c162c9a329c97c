package restclient_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/restclient"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv/faultproxy"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bundle is a real API server on a fresh embedded store, a fault proxy in
// front of it, and a count of the requests the server received.
type bundle struct {
	proxy  *faultproxy.Proxy
	direct *restclient.Client // not through the proxy

	mu   sync.Mutex
	hits map[string]int // "METHOD path" → requests received
}

func setup(t *testing.T) *bundle {
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
	b := &bundle{hits: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.hits[r.Method+" "+r.URL.Path]++
		b.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	b.proxy, err = faultproxy.Start(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.proxy.Close() })
	b.direct, err = restclient.New(srv.URL, "", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// client returns a client through the proxy. Its connections are not
// reused, so that the transport never re-sends a request by itself: every
// repeat the test counts is the client's own.
func (b *bundle) client(t *testing.T, o restclient.Opts) *restclient.Client {
	t.Helper()
	c, err := restclient.NewWithOpts(b.proxy.URL(), "", &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (b *bundle) hitsOf(route string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hits[route]
}

// jobs lists the jobs of queue directly.
func (b *bundle) jobs(t *testing.T, queue string) []httpapi.Job {
	t.Helper()
	page, err := b.direct.ListJobs(t.Context(), restclient.ListParams{Queues: []string{queue}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return page.Jobs
}

func TestEnqueueIsRepeatedWithItsKeyAfterALostAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	b.proxy.DropNextResponses(1)
	j, err := c.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "single", Args: json.RawMessage(`{"n":1}`)})
	if err != nil {
		t.Fatalf("Enqueue after a lost answer: %v", err)
	}
	if b.proxy.Dropped() != 1 || b.hitsOf("POST /v1/jobs") != 2 {
		t.Fatalf("dropped %d, server hits %d; want the first answer lost and one repeat", b.proxy.Dropped(), b.hitsOf("POST /v1/jobs"))
	}
	stored := b.jobs(t, "single")
	if len(stored) != 1 || stored[0].ID != j.ID {
		t.Fatalf("stored %d jobs (%+v), want only job %d", len(stored), stored, j.ID)
	}

	b.proxy.DropNextResponses(1)
	id, dup, err := c.EnqueueID(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "by-id"})
	if err != nil || dup {
		t.Fatalf("EnqueueID after a lost answer: %d, %v, %v", id, dup, err)
	}
	if stored := b.jobs(t, "by-id"); len(stored) != 1 || stored[0].ID != id {
		t.Fatalf("EnqueueID stored %+v, want only job %d", stored, id)
	}
}

func TestBatchIsRepeatedWithItsKeyAfterALostAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	reqs := []httpapi.EnqueueRequest{{Kind: "a", Queue: "batch"}, {Kind: "b", Queue: "batch"}, {Kind: "c", Queue: "batch"}}
	b.proxy.DropNextResponses(1)
	got, err := c.EnqueueBatch(t.Context(), reqs)
	if err != nil || len(got) != 3 {
		t.Fatalf("EnqueueBatch after a lost answer: %d jobs, %v", len(got), err)
	}
	if stored := b.jobs(t, "batch"); len(stored) != 3 {
		t.Fatalf("stored %d jobs, want 3", len(stored))
	}
	if b.hitsOf("POST /v1/jobs/batch") != 2 {
		t.Fatalf("server hits %d, want 2", b.hitsOf("POST /v1/jobs/batch"))
	}
}

func TestCompleteIsRepeatedAfterALostAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	if _, err := b.direct.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "work"}); err != nil {
		t.Fatal(err)
	}
	leased, err := c.Lease(t.Context(), restclient.LeaseRequest{Queues: []string{"work"}})
	if err != nil || len(leased) != 1 {
		t.Fatalf("lease: %+v, %v", leased, err)
	}
	b.proxy.DropNextResponses(1)
	j, err := c.Complete(t.Context(), leased[0].ID, leased[0].LeaseToken, json.RawMessage(`{"ok":true}`))
	if err != nil {
		t.Fatalf("Complete after a lost answer: %v", err)
	}
	if j.State != "completed" || j.Attempt != 1 || string(j.Output) != `{"ok":true}` {
		t.Fatalf("completed job %+v, want completed at attempt 1 with the output", j)
	}
	if b.hitsOf("POST /v1/jobs/"+itoa(j.ID)+"/complete") != 2 || b.proxy.Dropped() != 1 {
		t.Fatalf("complete hits %d, dropped %d; want 2, 1", b.hitsOf("POST /v1/jobs/"+itoa(j.ID)+"/complete"), b.proxy.Dropped())
	}
}

func TestReadsAreRepeatedAfterALostAnswer(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	j, err := b.direct.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "read"})
	if err != nil {
		t.Fatal(err)
	}
	b.proxy.DropNextResponses(2)
	got, err := c.GetJob(t.Context(), j.ID)
	if err != nil || got.ID != j.ID {
		t.Fatalf("GetJob after two lost answers: %+v, %v", got, err)
	}
}

func TestWithoutKeysAnEnqueueIsNotRepeated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{NoIdempotencyKeys: true})
	b.proxy.DropNextResponses(1)
	if _, err := c.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "nokey"}); err == nil {
		t.Fatal("an enqueue without a key came back despite its lost answer")
	}
	// The server stored the job; repeating the call would have stored a
	// second one, so the client must not.
	if n := len(b.jobs(t, "nokey")); n != 1 || b.hitsOf("POST /v1/jobs") != 1 {
		t.Fatalf("stored %d jobs in %d requests, want 1 in 1", n, b.hitsOf("POST /v1/jobs"))
	}
}

func TestLeaseIsNotRepeated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	for range 2 {
		if _, err := b.direct.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "lease"}); err != nil {
			t.Fatal(err)
		}
	}
	b.proxy.DropNextResponses(1)
	if _, err := c.Lease(t.Context(), restclient.LeaseRequest{Queues: []string{"lease"}}); err == nil {
		t.Fatal("a lease came back despite its lost answer")
	}
	states := map[string]int{}
	for _, j := range b.jobs(t, "lease") {
		states[j.State]++
	}
	if states["running"] != 1 || states["available"] != 1 || b.hitsOf("POST /v1/lease") != 1 {
		t.Fatalf("states %v after %d lease requests; want one lost lease only", states, b.hitsOf("POST /v1/lease"))
	}
}

func TestRetriesEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{Retries: 2})
	b.proxy.SetMode(faultproxy.DropResponses)
	_, err := c.Queues(t.Context())
	if err == nil {
		t.Fatal("a read came back through a proxy that drops every answer")
	}
	if n := b.hitsOf("GET /v1/queues"); n != 3 {
		t.Fatalf("the server got %d requests, want 3: the call and 2 retries", n)
	}
	none := b.client(t, restclient.Opts{Retries: -1})
	if _, err := none.Queues(t.Context()); err == nil {
		t.Fatal("a read came back through a proxy that drops every answer")
	}
	if n := b.hitsOf("GET /v1/queues"); n != 4 {
		t.Fatalf("the server got %d requests in all, want 4: Retries -1 sends once", n)
	}
}

func TestAnswersAreNotRepeated(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(t, restclient.Opts{})
	j, err := b.direct.Enqueue(t.Context(), httpapi.EnqueueRequest{Kind: "k", Queue: "stale"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(t.Context(), j.ID, "not-the-token", nil)
	if !restclient.IsCode(err, "lease_lost") {
		t.Fatalf("complete with a wrong token: %v, want lease_lost", err)
	}
	if n := b.hitsOf("POST /v1/jobs/" + itoa(j.ID) + "/complete"); n != 1 {
		t.Fatalf("a refused complete was sent %d times, want once", n)
	}
	if !strings.Contains(err.Error(), "HTTP 409") {
		t.Fatalf("error %q does not give the status", err)
	}
}

func itoa(id int64) string { return strconv.FormatInt(id, 10) }
