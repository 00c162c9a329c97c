package drover_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover"
	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/server"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv/faultproxy"
)

// libStore is a way for the library to reach its jobs. The worker tests
// run on each, so that one Worker's behaviour is shown to be the same in
// process and against a remote server.
type libStore struct {
	name string
	open func(t *testing.T) *drover.Store
}

var libStores = []libStore{
	{"embedded", openStore},
	{"remote", func(t *testing.T) *drover.Store { return openRemote(t, startServer(t, nil), "") }},
}

// onEachStore runs f as one parallel subtest per libStore.
func onEachStore(t *testing.T, f func(t *testing.T, ls libStore)) {
	t.Helper()
	for _, ls := range libStores {
		t.Run(ls.name, func(t *testing.T) {
			t.Parallel()
			f(t, ls)
		})
	}
}

// startClient is the package's startClient on this store.
func (ls libStore) startClient(t *testing.T, workers *drover.Workers, cfg drover.Config) *drover.Client {
	t.Helper()
	return startClientOn(t, ls.open(t), workers, cfg)
}

// startServer runs `drover serve` in-process on a fresh embedded store and
// a loopback port until the test ends, and returns its URL. edit, when
// set, changes the configuration first.
func startServer(t *testing.T, edit func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.NoSync = true
	cfg.ShutdownTimeout = 5 * time.Second
	if edit != nil {
		edit(&cfg)
	}
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	// Not t.Context(): that ends before the cleanups, and the clients'
	// cleanups need the server to drain.
	ctx, cancel := context.WithCancel(context.Background()) //nolint:usetesting // see above
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	// Registered before the clients' cleanups, so it runs after them.
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("the server did not stop within 15s")
		}
	})
	return "http://" + ln.Addr().String()
}

// startProxy puts a fault proxy in front of the server at url until the
// test ends.
func startProxy(t *testing.T, url string) *faultproxy.Proxy {
	t.Helper()
	proxy, err := faultproxy.Start(strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return proxy
}

// openRemote opens a remote store on url, closed when the test ends.
func openRemote(t *testing.T, url, token string) *drover.Store {
	t.Helper()
	st, err := drover.OpenRemote(url, &drover.RemoteOptions{Token: token, Logger: discard})
	if err != nil {
		t.Fatalf("OpenRemote: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close remote store: %v", err)
		}
	})
	return st
}

func TestRemoteClientErrors(t *testing.T) {
	t.Parallel()
	c := newClientOn(t, openRemote(t, startServer(t, nil), ""), nil, drover.Config{})

	if _, err := c.Get(t.Context(), 424242); !errors.Is(err, drover.ErrNotFound) {
		t.Errorf("Get of a missing job = %v, want ErrNotFound", err)
	}
	_, err := c.Insert(t.Context(), testArgs{}, &drover.InsertOpts{Priority: 12})
	var ve *drover.ValidationError
	if !errors.As(err, &ve) || ve.Field != "priority" || !errors.Is(err, drover.ErrInvalid) {
		t.Errorf("Insert with priority 12 = %v, want a *ValidationError on field priority", err)
	}
	_, err = c.InsertMany(t.Context(), []drover.InsertManyParams{{Args: testArgs{}}, {Args: testArgs{}, Opts: &drover.InsertOpts{Queue: "no spaces"}}})
	if !errors.As(err, &ve) || ve.Field != "jobs[1].queue" {
		t.Errorf("InsertMany with a bad queue = %v, want a *ValidationError on jobs[1].queue", err)
	}
	res, err := c.Insert(t.Context(), testArgs{Name: "u"}, &drover.InsertOpts{Unique: &drover.UniqueOpts{Key: "k1"}})
	if err != nil || res.Duplicate {
		t.Fatalf("first unique insert = %+v, %v", res, err)
	}
	dup, err := c.Insert(t.Context(), testArgs{Name: "u"}, &drover.InsertOpts{Unique: &drover.UniqueOpts{Key: "k1"}})
	if err != nil || !dup.Duplicate || dup.Job.ID != res.Job.ID {
		t.Fatalf("second unique insert = %+v, %v; want a duplicate of job %d", dup, err, res.Job.ID)
	}
	cj, err := c.Cancel(t.Context(), res.Job.ID)
	if err != nil || cj.State != drover.JobStateCancelled {
		t.Fatalf("Cancel = %+v, %v", cj, err)
	}
	rj, err := c.Retry(t.Context(), res.Job.ID)
	if err != nil || rj.State != drover.JobStateAvailable {
		t.Fatalf("Retry = %+v, %v; want available", rj, err)
	}
}

func TestRemoteClientTokens(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var creds authtest.Credentials
	func() {
		st, err := sqlitestore.Open(dir, sqlitestore.Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		creds = authtest.NewCredentials(t, st)
	}()
	tokens := map[string]string{
		"read":     creds[authtest.Credential(auth.ScopeRead)],
		"producer": creds[authtest.Credential(auth.ScopeProducer)],
	}
	url := startServer(t, func(c *config.Config) { c.DataDir = dir })

	anon := newClientOn(t, openRemote(t, url, ""), nil, drover.Config{})
	if _, err := anon.Insert(t.Context(), testArgs{}, nil); !errors.Is(err, drover.ErrUnauthorized) {
		t.Errorf("Insert without a token = %v, want ErrUnauthorized", err)
	}
	reader := newClientOn(t, openRemote(t, url, tokens["read"]), nil, drover.Config{})
	if _, err := reader.Insert(t.Context(), testArgs{}, nil); !errors.Is(err, drover.ErrForbidden) {
		t.Errorf("Insert with a read token = %v, want ErrForbidden", err)
	}
	producer := newClientOn(t, openRemote(t, url, tokens["producer"]), nil, drover.Config{})
	res, err := producer.Insert(t.Context(), testArgs{Name: "ok"}, nil)
	if err != nil {
		t.Fatalf("Insert with a producer token: %v", err)
	}
	j, err := reader.Get(t.Context(), res.Job.ID)
	if err != nil || j.Kind != "test.work" {
		t.Fatalf("Get with a read token = %+v, %v", j, err)
	}
}

// TestRemoteWorkerSurvivesResets works jobs through a proxy that resets
// every connection again and again: the Work stream reconnects, settles
// sent again are answered once, and every job ends completed exactly once.
func TestRemoteWorkerSurvivesResets(t *testing.T) {
	t.Parallel()
	url := startServer(t, nil)
	proxy := startProxy(t, url)

	const jobs = 600
	var ran sync.Map // job id → runs
	var runs atomic.Int64
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(_ context.Context, j *drover.Job[testArgs]) error {
		n, _ := ran.LoadOrStore(j.ID, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		runs.Add(1)
		time.Sleep(time.Millisecond)
		return nil
	}))
	worker := newClientOn(t, openRemote(t, proxy.URL(), ""), ws, drover.Config{
		Queues: map[string]drover.QueueConfig{"default": {MaxWorkers: 20}}, LeaseFor: 2 * time.Second,
	})
	producer := newClientOn(t, openRemote(t, url, ""), nil, drover.Config{})
	params := make([]drover.InsertManyParams, jobs)
	for i := range params {
		params[i] = drover.InsertManyParams{Args: testArgs{Inner: innerArgs{N: i}}}
	}
	res, err := producer.InsertMany(t.Context(), params)
	if err != nil {
		t.Fatal(err)
	}
	if err := worker.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Reset every connection a few times while the jobs run.
	resets := 0
	for runs.Load() < jobs && resets < 8 {
		time.Sleep(40 * time.Millisecond)
		proxy.SetMode(faultproxy.Reset)
		time.Sleep(20 * time.Millisecond)
		proxy.SetMode(faultproxy.Pass)
		resets++
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range res {
		for {
			j, err := producer.Get(t.Context(), r.Job.ID)
			if err != nil {
				t.Fatal(err)
			}
			if j.State == drover.JobStateCompleted {
				// A job runs again only when its lease expired first,
				// which the rescuer records as a failed attempt; a job
				// pushed as a stream broke was never received, so it
				// may have fewer runs than attempts, never more.
				v, _ := ran.Load(j.ID)
				if n := v.(*atomic.Int64).Load(); int(n) > j.Attempt || len(j.Errors) != j.Attempt-1 {
					t.Errorf("job %d ran %d times, completed at attempt %d with %d errors", j.ID, n, j.Attempt, len(j.Errors))
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job %d is %s after 30s, want completed", j.ID, j.State)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := worker.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("%d resets; %d runs for %d jobs", resets, runs.Load(), jobs)
}

func TestOpenPicksTheStore(t *testing.T) {
	t.Parallel()
	if _, err := drover.Open(t.Context(), "", nil); err == nil {
		t.Error("Open with no target succeeded")
	}
	for _, bad := range []string{"ftp://example.com", "http://", "http://[::1"} {
		if _, err := drover.OpenRemote(bad, nil); err == nil {
			t.Errorf("OpenRemote(%q) succeeded", bad)
		}
	}
	st, err := drover.Open(t.Context(), t.TempDir(), &drover.OpenOptions{Embedded: &drover.EmbeddedOptions{NoSync: true}})
	if err != nil {
		t.Fatalf("Open(dir): %v", err)
	}
	c := newClientOn(t, st, nil, drover.Config{})
	if _, err := c.Insert(t.Context(), testArgs{}, nil); err != nil {
		t.Errorf("Insert on the embedded store: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Error(err)
	}
	url := startServer(t, nil)
	rs, err := drover.Open(t.Context(), url, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	defer rs.Close()
	rc := newClientOn(t, rs, nil, drover.Config{})
	res, err := rc.Insert(t.Context(), testArgs{Name: "far"}, nil)
	if err != nil {
		t.Fatalf("Insert on the remote store: %v", err)
	}
	if _, err := rc.InsertTx(t.Context(), nil, testArgs{}, nil); !errors.Is(err, drover.ErrInvalidState) {
		t.Errorf("InsertTx on a remote store = %v, want ErrInvalidState", err)
	}
	j, err := rc.Get(t.Context(), res.Job.ID)
	if err != nil || j.State != drover.JobStateAvailable {
		t.Fatalf("Get = %+v, %v", j, err)
	}
}

// TestRemoteInsertAnswerLost loses the answer to an insert: the client
// tries again with the same idempotency key, and the server answers with
// the first job instead of enqueueing a second.
func TestRemoteInsertAnswerLost(t *testing.T) {
	t.Parallel()
	url := startServer(t, nil)
	proxy := startProxy(t, url)
	c := newClientOn(t, openRemote(t, proxy.URL(), ""), nil, drover.Config{})
	proxy.DropNextResponses(1)
	res, err := c.Insert(t.Context(), testArgs{Name: "once"}, &drover.InsertOpts{Queue: "once"})
	if err != nil {
		t.Fatalf("Insert through a lost answer: %v", err)
	}
	if proxy.Dropped() != 1 {
		t.Fatalf("the proxy dropped %d answers, want 1: the test tested nothing", proxy.Dropped())
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/v1/queues", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var qs struct {
		Queues []struct {
			Name   string         `json:"name"`
			Counts map[string]int `json:"counts"`
		} `json:"queues"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		t.Fatal(err)
	}
	for _, q := range qs.Queues {
		if q.Name == "once" && q.Counts["available"] != 1 {
			t.Fatalf("queue once holds %d jobs, want 1: the repeated insert enqueued again", q.Counts["available"])
		}
	}
	if len(qs.Queues) != 1 {
		t.Fatalf("queues %+v, want just once", qs.Queues)
	}
	if res.Job.Queue != "once" || res.Duplicate {
		t.Fatalf("Insert = %+v", res)
	}
}

// bigArgs carries an integer that a double cannot hold.
type bigArgs struct {
	N int64 `json:"n"`
}

func (bigArgs) Kind() string { return "test.big" }

// TestRemoteArgsKeepPrecision sends 2^53+1 through a remote insert and a
// Work stream: the library sends and receives args as JSON text, so the
// worker sees the exact number (a protobuf Value would round it).
func TestRemoteArgsKeepPrecision(t *testing.T) {
	t.Parallel()
	const n = int64(1)<<53 + 1
	got := make(chan int64, 1)
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(_ context.Context, j *drover.Job[bigArgs]) error {
		got <- j.Args.N
		return nil
	}))
	c := libStores[1].startClient(t, ws, drover.Config{})
	res, err := c.Insert(t.Context(), bigArgs{N: n}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if v := recv(t, got, 10*time.Second, "the worker"); v != n {
		t.Fatalf("the worker got %d, want %d", v, n)
	}
	if string(res.Job.Args) != `{"n":9007199254740993}` {
		t.Errorf("insert answered args %s", res.Job.Args)
	}
}

// TestRemoteCompress inserts and reads back a job large enough to be
// gzipped both ways with RemoteOptions.Compress.
func TestRemoteCompress(t *testing.T) {
	t.Parallel()
	st, err := drover.OpenRemote(startServer(t, nil), &drover.RemoteOptions{Compress: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := newClientOn(t, st, nil, drover.Config{})
	name := strings.Repeat("gzip me ", 4<<10) // 32 KiB
	res, err := c.Insert(t.Context(), testArgs{Name: name}, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := c.Get(t.Context(), res.Job.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got testArgs
	if err := json.Unmarshal(j.Args, &got); err != nil || got.Name != name {
		t.Fatalf("args came back as %d bytes (%v), want the %d-byte name", len(j.Args), err, len(name))
	}
}
