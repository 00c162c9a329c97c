// Package bench runs the benchmark workloads of Drover's design (W1–W5):
// the same workloads for every store and face, open-loop where latency is
// measured, with progress lines while they run and one result per
// workload. `drover bench` prints them as a table or JSON.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover"
	"github.com/droverhq/drover/internal/restclient"
)

// Args are the ~100-byte args of every benchmark job. Sent records the
// enqueue time for latency measurements.
type Args struct {
	CustomerID int    `json:"customer_id"`
	Email      string `json:"email"`
	Template   string `json:"template"`
	Locale     string `json:"locale"`
	Sent       int64  `json:"sent,omitempty"`
}

// Kind implements drover.JobArgs.
func (Args) Kind() string { return "bench.noop" }

func newArgs(i int) Args {
	return Args{CustomerID: 100000 + i, Email: "someone@example.com", Template: "welcome", Locale: "en-GB"}
}

// Config says what to run.
type Config struct {
	// Workloads to run, e.g. ["W1", "W3"]; empty means all.
	Workloads []string
	// DataDir is the embedded store's directory; each workload uses a
	// fresh subdirectory, removed afterwards.
	DataDir string
	// Scale multiplies the job counts (1 is the design's size); smaller
	// values make a quick smoke run.
	Scale float64
	// NoSync runs without fsync (not the design's durable setting).
	NoSync bool
	// Progress receives progress lines; nil discards them.
	Progress io.Writer
	// Server, when set, runs the workloads against the server at this
	// URL instead of in-process, over Protocol; Token authenticates.
	Server string
	Token  string
	// Protocol is how the workloads reach Server: "rest" (the default:
	// HTTP/JSON calls and long-poll leases) or "grpc" (the Go library's
	// remote store: gRPC inserts, and workers on the Work stream).
	Protocol string
	// DatabaseURL, when set, runs the in-process workloads on PostgreSQL:
	// each in a fresh schema, dropped afterwards.
	DatabaseURL string
}

// Result is one workload's outcome.
type Result struct {
	Workload   string  `json:"workload"`
	Desc       string  `json:"description"`
	Jobs       int     `json:"jobs"`
	Seconds    float64 `json:"seconds"`
	JobsPerSec float64 `json:"jobs_per_sec"`
	// Latencies in milliseconds, when the workload measures them.
	P50ms      float64 `json:"p50_ms,omitempty"`
	P99ms      float64 `json:"p99_ms,omitempty"`
	MaxMs      float64 `json:"max_ms,omitempty"`
	PeakRSSMiB float64 `json:"peak_rss_mib,omitempty"`
	Note       string  `json:"note,omitempty"`
}

type workload struct {
	id   string
	desc string
	run  func(ctx context.Context, r *runner) (Result, error)
	// rest runs the workload against a server over REST; nil when it
	// only makes sense in-process.
	rest func(ctx context.Context, r *runner) (Result, error)
}

var workloads = []workload{
	{"W1", "insert 100,000 jobs in batches of 1,000", w1, restW1},
	{"W2", "50 concurrent clients insert single jobs, 20,000 in all", w2, restW2},
	{"W3", "drain 100,000 waiting jobs with 100 concurrent workers", w3, restW3},
	{"W4", "insert one job every millisecond for 10 s while workers run", w4, restW4},
	{"W5", "peak RSS while W3 runs with 1,000,000 jobs waiting", w5, nil},
}

// IDs lists the workload ids in order.
func IDs() []string {
	out := make([]string, len(workloads))
	for i, w := range workloads {
		out[i] = w.id
	}
	return out
}

// Run runs the chosen workloads in order and returns their results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	want := map[string]bool{}
	for _, id := range cfg.Workloads {
		id = strings.ToUpper(strings.TrimSpace(id))
		if !slices.Contains(IDs(), id) {
			return nil, fmt.Errorf("unknown workload %q (have %s)", id, strings.Join(IDs(), ", "))
		}
		want[id] = true
	}
	switch cfg.Protocol {
	case "", "rest":
		cfg.Protocol = "rest"
	case "grpc":
		if cfg.Server == "" {
			return nil, errors.New("protocol grpc needs a server URL")
		}
	default:
		return nil, fmt.Errorf("unknown protocol %q (have rest, grpc)", cfg.Protocol)
	}
	remote := cfg.Server != "" && cfg.Protocol == "grpc"
	var api *restclient.Client
	if cfg.Server != "" && !remote {
		var err error
		if api, err = newRESTClient(cfg.Server, cfg.Token); err != nil {
			return nil, err
		}
	}
	var out []Result
	for _, w := range workloads {
		if len(want) > 0 && !want[w.id] {
			continue
		}
		if (api != nil && w.rest == nil) || (remote && w.id == "W5") {
			if want[w.id] {
				return out, fmt.Errorf("%s measures the server's memory in-process; it does not run with --server", w.id)
			}
			fmt.Fprintf(cfg.Progress, "%s skipped: in-process only\n", w.id)
			continue
		}
		r := &runner{cfg: cfg, id: w.id, api: api}
		var (
			res Result
			err error
		)
		switch {
		case api != nil:
			r.queue = fmt.Sprintf("bench-%s-%d", strings.ToLower(w.id), time.Now().UnixNano())
			res, err = w.rest(ctx, r)
		case remote:
			// The library's own workloads, on a remote store.
			r.queue = fmt.Sprintf("bench-%s-%d", strings.ToLower(w.id), time.Now().UnixNano())
			res, err = w.run(ctx, r)
			r.close()
		default:
			dir, derr := os.MkdirTemp(cfg.DataDir, "bench-"+strings.ToLower(w.id)+"-")
			if derr != nil {
				return out, derr
			}
			r.dir = dir
			if cfg.DatabaseURL != "" {
				r.schema = fmt.Sprintf("drover_bench_%s_%d", strings.ToLower(w.id), time.Now().UnixNano())
			}
			res, err = w.run(ctx, r)
			r.close()
			os.RemoveAll(dir)
			err = r.dropSchema(err)
		}
		if res, err = r.finish(res, err, w.desc); err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// dropSchema drops the runner's PostgreSQL schema, if it has one, and
// returns err, or the drop's error when err is nil.
func (r *runner) dropSchema(err error) error {
	if r.schema == "" {
		return err
	}
	if derr := dropSchema(r.cfg.DatabaseURL, r.schema); derr != nil && err == nil {
		return derr
	}
	return err
}

// finish labels a run's result, fills in its rate and reports it, or
// names the run in its error.
func (r *runner) finish(res Result, err error, desc string) (Result, error) {
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", r.id, err)
	}
	res.Workload, res.Desc = r.id, desc
	if res.Seconds > 0 && res.JobsPerSec == 0 {
		res.JobsPerSec = float64(res.Jobs) / res.Seconds
	}
	fmt.Fprintf(r.cfg.Progress, "%s done: %s\n", r.id, summary(res))
	return res, nil
}

func summary(r Result) string {
	s := fmt.Sprintf("%d jobs in %.2fs, %.0f jobs/s", r.Jobs, r.Seconds, r.JobsPerSec)
	if r.P99ms > 0 {
		s += fmt.Sprintf(", p50 %.2f ms, p99 %.2f ms, max %.2f ms", r.P50ms, r.P99ms, r.MaxMs)
	}
	if r.PeakRSSMiB > 0 {
		s += fmt.Sprintf(", peak RSS %.0f MiB", r.PeakRSSMiB)
	}
	return s
}

// runner holds one workload's store and helpers.
type runner struct {
	cfg   Config
	dir   string
	id    string
	store *drover.Store
	// api and queue are set when the workload runs over REST: each run
	// uses a fresh queue so runs never see each other's jobs.
	api   *restclient.Client
	queue string
	// schema is the workload's PostgreSQL schema, with Config.DatabaseURL.
	schema string
}

func (r *runner) scaled(n int) int { return max(1, int(float64(n)*r.cfg.Scale)) }

// workQueue is the queue the workload's jobs go to: a fresh one per run
// on a server, "default" on the workload's own store.
func (r *runner) workQueue() string {
	if r.queue == "" {
		return "default"
	}
	return r.queue
}

// insertOpts puts a job in workQueue.
func (r *runner) insertOpts() *drover.InsertOpts {
	return &drover.InsertOpts{Queue: r.workQueue()}
}

func (r *runner) open() (*drover.Store, error) {
	var st *drover.Store
	var err error
	switch {
	case r.cfg.Protocol == "grpc":
		st, err = drover.OpenRemote(r.cfg.Server, &drover.RemoteOptions{Token: r.cfg.Token, Logger: quietLogger()})
	case r.schema != "":
		st, err = drover.OpenPostgres(context.Background(), r.cfg.DatabaseURL, &drover.PostgresOptions{Schema: r.schema, Logger: quietLogger()})
	default:
		st, err = drover.OpenEmbedded(r.dir, &drover.EmbeddedOptions{NoSync: r.cfg.NoSync, Logger: quietLogger()})
	}
	if err != nil {
		return nil, err
	}
	r.store = st
	return st, nil
}

// inserter opens the workload's store and returns an insert-only client.
func (r *runner) inserter() (*drover.Client, error) {
	st, err := r.open()
	if err != nil {
		return nil, err
	}
	return insertOnly(st)
}

func insertOnly(st *drover.Store) (*drover.Client, error) {
	return drover.NewClient(st, &drover.Config{NoMaintenance: true, Logger: quietLogger()})
}

func (r *runner) close() {
	if r.store != nil {
		r.store.Close()
	}
}

func (r *runner) progress(format string, a ...any) {
	fmt.Fprintf(r.cfg.Progress, r.id+" "+format+"\n", a...)
}

// ticker prints progress once a second until stop is called.
func (r *runner) ticker(what string, done func() int, total int) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, start := 0, time.Now()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				n := done()
				r.progress("%s %d/%d (%.0f/s now, %.0f/s overall)", what, n, total, float64(n-last), float64(n)/time.Since(start).Seconds())
				last = n
			}
		}
	}()
	return func() { close(quit); wg.Wait() }
}

// insertBatches inserts n jobs in batches of size through client.
func insertBatches(ctx context.Context, client *drover.Client, opts *drover.InsertOpts, n, size int, inserted *atomic.Int64) error {
	for done := 0; done < n; {
		k := min(size, n-done)
		params := make([]drover.InsertManyParams, k)
		for i := range params {
			params[i] = drover.InsertManyParams{Args: newArgs(done + i), Opts: opts}
		}
		if _, err := client.InsertMany(ctx, params); err != nil {
			return err
		}
		done += k
		inserted.Add(int64(k))
	}
	return nil
}

func w1(ctx context.Context, r *runner) (Result, error) {
	client, err := r.inserter()
	if err != nil {
		return Result{}, err
	}
	n := r.scaled(100_000)
	var inserted atomic.Int64
	stop := r.ticker("inserted", func() int { return int(inserted.Load()) }, n)
	start := time.Now()
	err = insertBatches(ctx, client, r.insertOpts(), n, 1000, &inserted)
	elapsed := time.Since(start)
	stop()
	return Result{Jobs: n, Seconds: elapsed.Seconds()}, err
}

func w2(ctx context.Context, r *runner) (Result, error) {
	client, err := r.inserter()
	if err != nil {
		return Result{}, err
	}
	return r.closedLoop(r.scaled(20_000), "inserted", func(i int) error {
		_, err := client.Insert(ctx, newArgs(i), r.insertOpts())
		return err
	})
}

// w2Clients is how many clients W2 (and its ceiling, C2) call from.
const w2Clients = 50

// closedLoop makes n calls from w2Clients goroutines, each calling with
// the next index as soon as its previous call returns, until all n are
// made or one fails. It returns the calls' rate and latencies; what
// names them in the progress lines.
func (r *runner) closedLoop(n int, what string, call func(i int) error) (Result, error) {
	lat := make([]time.Duration, n)
	var next, done atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := r.ticker(what, func() int { return int(done.Load()) }, n)
	start := time.Now()
	var wg sync.WaitGroup
	for range w2Clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				t0 := time.Now()
				if err := call(i); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				lat[i] = time.Since(t0)
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	if p := firstErr.Load(); p != nil {
		return Result{}, *p
	}
	res := Result{Jobs: n, Seconds: elapsed.Seconds()}
	setLatency(&res, lat)
	return res, nil
}

// drain works every waiting job with workers no-op workers and returns
// the time it took.
func drain(ctx context.Context, r *runner, st *drover.Store, n, workers int, onWork func(*drover.Job[Args])) (time.Duration, error) {
	var worked atomic.Int64
	all := make(chan struct{})
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(ctx context.Context, j *drover.Job[Args]) error {
		if onWork != nil {
			onWork(j)
		}
		if int(worked.Add(1)) == n {
			close(all)
		}
		return nil
	}))
	client, err := drover.NewClient(st, &drover.Config{
		Queues:  map[string]drover.QueueConfig{r.workQueue(): {MaxWorkers: workers}},
		Workers: ws, Logger: quietLogger(),
	})
	if err != nil {
		return 0, err
	}
	stop := r.ticker("worked", func() int { return int(worked.Load()) }, n)
	start := time.Now()
	if err := client.Start(ctx); err != nil {
		stop()
		return 0, err
	}
	var waitErr error
	select {
	case <-all:
	case <-ctx.Done():
		waitErr = ctx.Err()
	}
	// Stop waits for the last completions to be durable, so the time
	// covers every job settled, not just started.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopErr := client.Stop(sctx)
	elapsed := time.Since(start)
	stop()
	return elapsed, errors.Join(waitErr, stopErr)
}

func w3(ctx context.Context, r *runner) (Result, error) {
	st, err := r.open()
	if err != nil {
		return Result{}, err
	}
	n := r.scaled(100_000)
	if err := fill(ctx, r, st, n); err != nil {
		return Result{}, err
	}
	elapsed, err := drain(ctx, r, st, n, 100, nil)
	return Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "from client start until every job is durably completed"}, err
}

func fill(ctx context.Context, r *runner, st *drover.Store, n int) error {
	client, err := insertOnly(st)
	if err != nil {
		return err
	}
	var inserted atomic.Int64
	stop := r.ticker("filling", func() int { return int(inserted.Load()) }, n)
	defer stop()
	return insertBatches(ctx, client, r.insertOpts(), n, 1000, &inserted)
}

func w4(ctx context.Context, r *runner) (Result, error) {
	st, err := r.open()
	if err != nil {
		return Result{}, err
	}
	dur := time.Duration(float64(10*time.Second) * r.cfg.Scale)
	dur = max(dur, 100*time.Millisecond)
	n := int(dur / time.Millisecond)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	var started atomic.Int64
	all := make(chan struct{})
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(ctx context.Context, j *drover.Job[Args]) error {
		d := time.Duration(time.Now().UnixNano() - j.Args.Sent)
		mu.Lock()
		lat = append(lat, d)
		mu.Unlock()
		if int(started.Add(1)) == n {
			close(all)
		}
		return nil
	}))
	client, err := drover.NewClient(st, &drover.Config{
		Queues:  map[string]drover.QueueConfig{r.workQueue(): {MaxWorkers: 100}},
		Workers: ws, Logger: quietLogger(),
	})
	if err != nil {
		return Result{}, err
	}
	if err := client.Start(ctx); err != nil {
		return Result{}, err
	}
	stop := r.ticker("started", func() int { return int(started.Load()) }, n)
	start := time.Now()
	waitErr := openLoop(n, func(i int) error {
		a := newArgs(i)
		a.Sent = time.Now().UnixNano()
		_, err := client.Insert(ctx, a, r.insertOpts())
		return err
	})
	if waitErr == nil {
		select {
		case <-all:
		case <-time.After(30 * time.Second):
			waitErr = fmt.Errorf("only %d of %d jobs started", started.Load(), n)
		}
	}
	elapsed := time.Since(start)
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = errors.Join(waitErr, client.Stop(sctx))
	res := Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "latency is enqueue call to worker start"}
	mu.Lock()
	setLatency(&res, lat)
	mu.Unlock()
	return res, err
}

func w5(ctx context.Context, r *runner) (Result, error) {
	st, err := r.open()
	if err != nil {
		return Result{}, err
	}
	n := r.scaled(1_000_000)
	if err := fill(ctx, r, st, n); err != nil {
		return Result{}, err
	}
	runtime.GC()
	var peak atomic.Int64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if rss := currentRSS(); rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-quit:
				return
			case <-t.C:
			}
		}
	}()
	elapsed, err := drain(ctx, r, st, n, 100, nil)
	close(quit)
	wg.Wait()
	return Result{Jobs: n, Seconds: elapsed.Seconds(), PeakRSSMiB: float64(peak.Load()) / (1 << 20),
		Note: "RSS sampled every 50 ms while draining, load generator included"}, err
}

// openLoop calls insert(i) for i in [0, n), one call per millisecond, each
// in its own goroutine whatever the previous ones are doing, so that a
// slow server shows up as latency rather than as fewer inserts. It waits
// for them all and returns the first error.
func openLoop(n int, insert func(i int) error) error {
	var wg sync.WaitGroup
	var first atomic.Pointer[error]
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for i := 0; i < n; i++ {
		<-t.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := insert(i); err != nil {
				first.CompareAndSwap(nil, &err)
			}
		}()
	}
	wg.Wait()
	if p := first.Load(); p != nil {
		return *p
	}
	return nil
}

// currentRSS reads the process's resident set size from /proc (Linux);
// elsewhere it returns 0.
func currentRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}

func setLatency(r *Result, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r.P50ms = ms(s[len(s)/2])
	r.P99ms = ms(s[min(len(s)-1, len(s)*99/100)])
	r.MaxMs = ms(s[len(s)-1])
}

// WriteTable prints results as a table for people.
func WriteTable(w io.Writer, results []Result) {
	fmt.Fprintf(w, "%-4s %10s %9s %12s %9s %9s %9s %9s  %s\n", "id", "jobs", "seconds", "jobs/s", "p50 ms", "p99 ms", "max ms", "RSS MiB", "workload")
	for _, r := range results {
		opt := func(v float64) string {
			if v == 0 {
				return "-"
			}
			return strconv.FormatFloat(v, 'f', 2, 64)
		}
		fmt.Fprintf(w, "%-4s %10d %9.2f %12.0f %9s %9s %9s %9s  %s\n", r.Workload, r.Jobs, r.Seconds, r.JobsPerSec,
			opt(r.P50ms), opt(r.P99ms), opt(r.MaxMs), opt(r.PeakRSSMiB), r.Desc)
	}
}

// WriteJSON prints results as JSON for machines.
func WriteJSON(w io.Writer, results []Result) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"results": results})
}

// dropSchema removes a workload's PostgreSQL schema.
func dropSchema(url, schema string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, err := pgxpool.New(ctx, url) // a pool parses pool_max_conns and the like; a plain connection would not
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	return err
}
