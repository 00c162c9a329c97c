// Command enginebench measures Drover's access pattern on the embedded
// engines it could be built on: modernc.org/sqlite (WAL, synchronous=FULL),
// go.etcd.io/bbolt (fsync per commit) and Pebble v2 (pebble.Sync).
//
// Every engine implements the same minimal job queue: a jobs table keyed by
// increasing id (~100-byte JSON args, state, queue, priority, scheduled_at)
// with the secondary indexes of Drover's SQLite schema (fetch order of
// available jobs, running jobs by lease expiry, state, finalized_at; with
// -indexes lean only fetch order and state of non-available jobs); lease
// takes the first N available jobs in fetch order and marks them running
// with a token; complete marks a running job completed.
//
// Workloads (every commit fsynced):
//
//	a  bulk insert, transactions of 1,000 jobs (default 100,000 jobs)
//	b  single-job insert, one transaction each, sequential (5,000)
//	c  group commit: 50 goroutines insert single jobs through one writer
//	   goroutine that batches what is waiting into one transaction (20,000)
//	d  drain: fetchers lease 100 at a time, each leased job is completed by
//	   its own request; all requests are group-committed (100,000)
//	e  lease flatness: lease+complete 10,000 jobs (as in d) when 10,000 or
//	   1,000,000 other jobs are stored, either available in another queue
//	   ("other") or already completed through the same queue ("done");
//	   the background is built once, then one warm-up run and -reps
//	   measured runs follow on the same store
//
// Workloads a-d run -reps times each on a fresh directory, the engines
// interleaved; the median is reported, with every run in brackets. Each
// run's log line (on stderr) says how many cores other processes used
// meanwhile, since a shared machine makes single runs noisy. -n scales
// every count for a quick check. The data go under -dir (default the
// system temp directory), which must be on the real disk, and are removed.
// Examples:
//
//	go run . -reps 5                         # everything, about 5 minutes on 2 cores
//	go run . -engine sqlite,bbolt -workload d,e -reps 3
//	go run . -n 0.05 -reps 1                 # smoke run, seconds
package main

import (
	"flag"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	engines    []string
	workloads  []string
	reps       int
	scale      float64
	parent     string
	bulk       int
	bulkBatch  int
	single     int
	group      int
	clients    int
	drain      int
	fetchers   int
	leaseN     int
	eTarget    int
	eSizes     []int
	eVariants  []string
	maxBatch   int
	savepoints bool
	maxOthers  float64
	retries    int
	eo         engineOpts
}

func main() {
	var c config
	var engines, workloads, sizes, variants string
	flag.StringVar(&engines, "engine", "sqlite,bbolt,pebble", "engines to measure, comma-separated: sqlite, bbolt, pebble")
	flag.StringVar(&workloads, "workload", "a,b,c,d,e", "workloads to run, comma-separated: a, b, c, d, e")
	flag.IntVar(&c.reps, "reps", 3, "runs of each workload per engine (the median is reported)")
	flag.Float64Var(&c.scale, "n", 1, "scale every job count by this factor (e.g. 0.1 for a quick run)")
	flag.StringVar(&c.parent, "dir", os.TempDir(), "parent directory for the temporary data directories (use the real disk, not tmpfs)")
	flag.IntVar(&c.bulk, "bulk", 100_000, "a: jobs to insert")
	flag.IntVar(&c.bulkBatch, "bulk-batch", 1_000, "a: jobs per transaction")
	flag.IntVar(&c.single, "single", 5_000, "b: jobs to insert one per transaction")
	flag.IntVar(&c.group, "group", 20_000, "c: jobs to insert through the group-commit writer")
	flag.IntVar(&c.clients, "clients", 50, "c: concurrent inserting goroutines")
	flag.IntVar(&c.drain, "drain", 100_000, "d: jobs to drain")
	flag.IntVar(&c.fetchers, "fetchers", 4, "d, e: concurrent fetchers, each leasing -lease jobs and completing them concurrently")
	flag.IntVar(&c.leaseN, "lease", 100, "d, e: jobs per lease")
	flag.IntVar(&c.eTarget, "e-target", 10_000, "e: jobs leased and completed per measurement")
	flag.StringVar(&sizes, "e-sizes", "10000,1000000", "e: numbers of other stored jobs")
	flag.StringVar(&variants, "e-variants", "other,done", "e: what the other jobs are: other (available in another queue), done (completed through the same queue)")
	flag.IntVar(&c.maxBatch, "max-batch", 1024, "c, d, e: most requests per group transaction (sqlitestore's default)")
	flag.BoolVar(&c.savepoints, "savepoints", true, "c, d, e: run each request of a group in its own SAVEPOINT (sqlite only; as sqlitestore does)")
	flag.StringVar(&c.eo.boltFreelist, "bolt-freelist", "array", "bbolt freelist type: array (bbolt's default) or map")
	flag.Float64Var(&c.eo.boltFill, "bolt-fill", 0.5, "bbolt FillPercent of the jobs bucket (bbolt's default 0.5; ids are appended, so up to 1.0 fits)")
	flag.Float64Var(&c.maxOthers, "max-others", 0.3, "repeat a run (see -retries) when other processes kept more than this many cores busy during it")
	flag.IntVar(&c.retries, "retries", 2, "most repeats of one run disturbed by other processes; the last is kept anyway")
	var indexes string
	flag.StringVar(&indexes, "indexes", "full", "index set: full (the six indexes of the committed schema.go) or lean (fetch, and state for non-available jobs)")
	flag.IntVar(&c.eo.sqliteCache, "sqlite-cache", 32, "SQLite page cache in MiB (sqlitestore's default)")
	flag.Parse()

	switch indexes {
	case "full":
	case "lean":
		c.eo.lean = true
	default:
		fatalf("-indexes must be full or lean")
	}
	c.engines = splitList(engines)
	c.workloads = splitList(workloads)
	c.eVariants = splitList(variants)
	for _, s := range splitList(sizes) {
		var v int
		if _, err := fmt.Sscan(s, &v); err != nil {
			fatalf("bad -e-sizes entry %q", s)
		}
		c.eSizes = append(c.eSizes, v)
	}
	sc := func(v int) int { return max(1, int(math.Round(float64(v)*c.scale))) }
	c.bulk, c.single, c.group, c.drain, c.eTarget = sc(c.bulk), sc(c.single), sc(c.group), sc(c.drain), sc(c.eTarget)
	for i := range c.eSizes {
		c.eSizes[i] = sc(c.eSizes[i])
	}
	if c.reps < 1 {
		fatalf("-reps must be at least 1")
	}

	header(&c)
	res := newResults()
	start := time.Now()
	startCPU := markCPU()
	for rep := 1; rep <= c.reps; rep++ {
		for _, wl := range []string{"a", "b", "c", "d"} {
			if !slices.Contains(c.workloads, wl) {
				continue
			}
			for _, eng := range c.engines {
				m := quiet(&c, fmt.Sprintf("rep %d  %-2s %-7s", rep, wl, eng), func() meas {
					return runFresh(&c, eng, func(dir string, e Engine) (Engine, meas) {
						switch wl {
						case "a":
							return wlBulk(&c, dir, e)
						case "b":
							return e, wlSingle(&c, e)
						case "c":
							return e, wlGroup(&c, e)
						default:
							return e, wlDrain(&c, e)
						}
					})
				})
				res.add(wl, eng, m)
			}
		}
	}
	if slices.Contains(c.workloads, "e") {
		for _, eng := range c.engines {
			for _, v := range c.eVariants {
				for _, size := range c.eSizes {
					wlFlat(&c, eng, v, size, res)
				}
			}
		}
	}
	fmt.Printf("\ntotal time %s, load average at the end: %s, other processes used %.2f cores on average\n\n",
		time.Since(start).Round(time.Second), loadavg(), othersSince(startCPU))
	res.print(&c)
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func fatalf(f string, args ...any) {
	fmt.Fprintf(os.Stderr, "enginebench: "+f+"\n", args...)
	os.Exit(1)
}

func check(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

func logf(f string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+f+"\n", args...)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func header(c *config) {
	fmt.Printf("enginebench  %s  go %s  GOMAXPROCS %d  NumCPU %d\n", time.Now().Format(time.RFC3339), runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU())
	fmt.Printf("data under %s (%s)  load average at the start: %s\n", c.parent, fsType(c.parent), loadavg())
	fmt.Printf("args: %d bytes, e.g. %s\n", len(mkArgs(1)), mkArgs(1))
	fmt.Printf("engines %v  workloads %v  reps %d  a=%d/%d  b=%d  c=%d×%d clients  d=%d (%d fetchers × lease %d)  e=%d at %v %v\n",
		c.engines, c.workloads, c.reps, c.bulk, c.bulkBatch, c.single, c.group, c.clients, c.drain, c.fetchers, c.leaseN, c.eTarget, c.eSizes, c.eVariants)
	idx := "full (fetch, lease, state, finalized; due and unique stay empty)"
	if c.eo.lean {
		idx = "lean (fetch, state of non-available jobs; due and unique stay empty)"
	}
	fmt.Printf("indexes: %s\n", idx)
	fmt.Printf("sqlite: WAL, synchronous=FULL, cache %d MiB, savepoints per request %v; bbolt: fsync per commit, freelist %s, jobs FillPercent %.2g; pebble: default options, Sync commits; group max %d\n\n",
		c.eo.sqliteCache, c.savepoints, c.eo.boltFreelist, c.eo.boltFill, c.maxBatch)
}

// ---- measurements ----

type meas struct {
	jobsPerSec float64
	extra      map[string]float64
}

func (m meas) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%10.0f jobs/s", m.jobsPerSec)
	keys := make([]string, 0, len(m.extra))
	for k := range m.extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%.3g", k, m.extra[k])
	}
	return b.String()
}

type results struct {
	order []string
	m     map[string]map[string][]meas // workload -> engine -> runs
}

func newResults() *results { return &results{m: map[string]map[string][]meas{}} }

func (r *results) add(wl, eng string, m meas) {
	if r.m[wl] == nil {
		r.m[wl] = map[string][]meas{}
		r.order = append(r.order, wl)
	}
	r.m[wl][eng] = append(r.m[wl][eng], m)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *results) print(c *config) {
	fmt.Println("medians (all runs in brackets)")
	fmt.Printf("| workload | %s |\n", strings.Join(c.engines, " | "))
	fmt.Printf("|---|%s\n", strings.Repeat("---|", len(c.engines)))
	for _, wl := range r.order {
		row := []string{wl}
		for _, eng := range c.engines {
			runs := r.m[wl][eng]
			if len(runs) == 0 {
				row = append(row, "–")
				continue
			}
			var jps []float64
			extras := map[string][]float64{}
			for _, m := range runs {
				jps = append(jps, m.jobsPerSec)
				for k, v := range m.extra {
					extras[k] = append(extras[k], v)
				}
			}
			var cell strings.Builder
			fmt.Fprintf(&cell, "%.0f jobs/s", median(jps))
			keys := make([]string, 0, len(extras))
			for k := range extras {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(&cell, ", %s %.3g", k, median(extras[k]))
			}
			all := make([]string, len(jps))
			for i, v := range jps {
				all[i] = fmt.Sprintf("%.0f", v)
			}
			fmt.Fprintf(&cell, " [%s]", strings.Join(all, " "))
			row = append(row, cell.String())
		}
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
}

// quiet runs f, and runs it again (up to c.retries times) while other
// processes kept more than c.maxOthers cores busy meanwhile: this machine
// has two cores and may be shared. The measurement records the cores the
// others used as "others".
func quiet(c *config, label string, f func() meas) meas {
	for try := 0; ; try++ {
		cm := markCPU()
		m := f()
		o := othersSince(cm)
		m.extra["others"] = o
		if o <= c.maxOthers || try >= c.retries {
			logf("%s %s", label, m)
			return m
		}
		logf("%s %s  (disturbed: repeated)", label, m)
	}
}

// ---- helpers ----

func mkArgs(i int64) []byte {
	return fmt.Appendf(nil, `{"user_id":%d,"email":"user%07d@example.com","template":"welcome","locale":"en-GB","send_at":"now"}`, i, i)
}

var jobSeq atomic.Int64

func mkJob(queue string) *NewJob {
	i := jobSeq.Add(1)
	now := time.Now().UnixMicro()
	return &NewJob{Queue: queue, Kind: "email", Priority: 1, ScheduledAt: now, CreatedAt: now, MaxAttempts: 25, Args: mkArgs(i)}
}

func newDir(c *config) string {
	dir, err := os.MkdirTemp(c.parent, "enginebench-*")
	check(err)
	return dir
}

// runFresh opens eng on a new directory, runs f and removes the directory.
func runFresh(c *config, eng string, f func(dir string, e Engine) (Engine, meas)) meas {
	dir := newDir(c)
	defer os.RemoveAll(dir)
	e, err := openEngine(eng, dir, c.eo)
	check(err)
	e, m := f(dir, e)
	if e != nil {
		check(e.Close())
	}
	return m
}

// insertBatches inserts n jobs of queue directly (no writer), per jobs per
// transaction.
func insertBatches(e Engine, queue string, n, per int) {
	for done := 0; done < n; {
		k := min(per, n-done)
		check(e.Update(func(tx Tx) error {
			for range k {
				if _, err := tx.Insert(mkJob(queue)); err != nil {
					return err
				}
			}
			return nil
		}))
		done += k
	}
}

// ---- workloads ----

func wlBulk(c *config, dir string, e Engine) (Engine, meas) {
	t0 := time.Now()
	insertBatches(e, "default", c.bulk, c.bulkBatch)
	el := time.Since(t0)
	live, err := dirSize(dir)
	check(err)
	check(e.Close())
	closed, err := dirSize(dir)
	check(err)
	return nil, meas{float64(c.bulk) / el.Seconds(), map[string]float64{
		"MiB_open":   float64(live) / (1 << 20),
		"MiB_closed": float64(closed) / (1 << 20),
	}}
}

func wlSingle(c *config, e Engine) meas {
	t0 := time.Now()
	insertBatches(e, "default", c.single, 1)
	el := time.Since(t0)
	return meas{float64(c.single) / el.Seconds(), map[string]float64{"ms_per_commit": el.Seconds() * 1000 / float64(c.single)}}
}

func wlGroup(c *config, e Engine) meas {
	w := newWriter(e, c.maxBatch, c.savepoints)
	defer w.stop()
	lat := make([][]time.Duration, c.clients)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range c.clients {
		n := c.group / c.clients
		if i < c.group%c.clients {
			n++
		}
		wg.Go(func() {
			for range n {
				j := mkJob("default")
				s := time.Now()
				check(w.do(func(tx Tx) error { _, err := tx.Insert(j); return err }))
				lat[i] = append(lat[i], time.Since(s))
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))]) / 1e6
	}
	return meas{float64(c.group) / el.Seconds(), map[string]float64{
		"p50_ms":    pct(0.50),
		"p99_ms":    pct(0.99),
		"avg_batch": float64(w.ops.Load()) / float64(w.commits.Load()),
	}}
}

type drainStats struct {
	jobs       int
	elapsed    time.Duration
	leaseNs    int64 // time spent inside Lease (in the transaction, before commit)
	leaseCalls int64
	commits    int64
	ops        int64
}

// drainQueue leases and completes the jobs of queue as Drover's in-process
// client would: each fetcher leases up to c.leaseN jobs in one request,
// then each leased job is completed by its own request from its own
// goroutine; the writer group-commits whatever is waiting.
func drainQueue(c *config, e Engine, queue string) drainStats {
	w := newWriter(e, c.maxBatch, c.savepoints)
	var total, leaseNs, leaseCalls atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for f := range c.fetchers {
		worker := fmt.Sprintf("worker-%d", f)
		wg.Go(func() {
			for {
				var got []Leased
				now := time.Now().UnixMicro()
				check(w.do(func(tx Tx) error {
					s := time.Now()
					var err error
					got, err = tx.Lease(queue, c.leaseN, now, now+30_000_000, worker)
					leaseNs.Add(int64(time.Since(s)))
					leaseCalls.Add(1)
					return err
				}))
				if len(got) == 0 {
					return
				}
				var jw sync.WaitGroup
				for _, l := range got {
					jw.Go(func() {
						check(w.do(func(tx Tx) error {
							ok, err := tx.Complete(l.ID, l.Token, time.Now().UnixMicro())
							if err == nil && !ok {
								err = fmt.Errorf("complete job %d: lease lost", l.ID)
							}
							return err
						}))
					})
				}
				jw.Wait()
				total.Add(int64(len(got)))
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	w.stop()
	return drainStats{int(total.Load()), el, leaseNs.Load(), leaseCalls.Load(), w.commits.Load(), w.ops.Load()}
}

func wlDrain(c *config, e Engine) meas {
	insertBatches(e, "default", c.drain, 10_000)
	d := drainQueue(c, e, "default")
	if d.jobs != c.drain {
		fatalf("drained %d jobs, want %d", d.jobs, c.drain)
	}
	return meas{float64(d.jobs) / d.elapsed.Seconds(), map[string]float64{
		"avg_batch": float64(d.ops) / float64(d.commits),
		"lease_us":  float64(d.leaseNs) / 1e3 / float64(d.leaseCalls),
	}}
}

// completeAll leases and completes every available job of queue in large
// transactions (no writer): the fast way to build a store whose queue has
// processed many jobs.
func completeAll(e Engine, queue string, per int) {
	for {
		n := 0
		check(e.Update(func(tx Tx) error {
			now := time.Now().UnixMicro()
			got, err := tx.Lease(queue, per, now, now+30_000_000, "builder")
			if err != nil {
				return err
			}
			n = len(got)
			for _, l := range got {
				if _, err := tx.Complete(l.ID, l.Token, now); err != nil {
					return err
				}
			}
			return nil
		}))
		if n == 0 {
			return
		}
	}
}

// buildBackground stores size other jobs: available in queue "other", or
// inserted into "default" and completed through it.
func buildBackground(e Engine, variant string, size int) {
	const chunk = 10_000
	for done := 0; done < size; done += chunk {
		k := min(chunk, size-done)
		switch variant {
		case "other":
			insertBatches(e, "other", k, k)
		case "done":
			insertBatches(e, "default", k, k)
			completeAll(e, "default", 1_000)
		default:
			fatalf("unknown -e-variants entry %q", variant)
		}
	}
}

func wlFlat(c *config, eng, variant string, size int, res *results) {
	key := fmt.Sprintf("e-%s-%d", variant, size)
	dir := newDir(c)
	defer os.RemoveAll(dir)
	e, err := openEngine(eng, dir, c.eo)
	check(err)
	t0 := time.Now()
	buildBackground(e, variant, size)
	sz, err := dirSize(dir)
	check(err)
	logf("   %s %s: background built in %s, %.1f MiB", key, eng, time.Since(t0).Round(time.Millisecond), float64(sz)/(1<<20))
	// Run 0 is a warm-up, not counted: right after the build the caches
	// are cold and Pebble still owes compactions. Every run adds its
	// c.eTarget jobs, completed, to the store.
	run := func() meas {
		insertBatches(e, "default", c.eTarget, c.eTarget)
		d := drainQueue(c, e, "default")
		if d.jobs != c.eTarget {
			fatalf("%s: drained %d jobs, want %d", key, d.jobs, c.eTarget)
		}
		return meas{float64(d.jobs) / d.elapsed.Seconds(), map[string]float64{
			"us_per_job": float64(d.elapsed.Microseconds()) / float64(d.jobs),
			"lease_us":   float64(d.leaseNs) / 1e3 / float64(d.leaseCalls),
		}}
	}
	logf("warm-up %s %-7s %s (not counted)", key, eng, run())
	for rep := 1; rep <= c.reps; rep++ {
		res.add(key, eng, quiet(c, fmt.Sprintf("rep %d  %s %-7s", rep, key, eng), run))
	}
	check(e.Close())
}
