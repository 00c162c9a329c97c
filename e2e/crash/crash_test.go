//go:build linux

package crash

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// The quick mode, run by every `go test` of the package (and so by `make
// test`), and its -short form. `make crash` and `make soak` pass the
// flags for more.
const (
	quickIterations   = 20
	quickPGIterations = 5
	shortIterations   = 3
	shortPGIterations = 1
	// Iterations run at once: they mostly wait (for leases to run out, for
	// restarts), so more than the machine's two cores keep it busy.
	defaultParallel   = 4
	defaultPGParallel = 2
)

const (
	// iterationDeadline bounds one iteration on a slow, shared machine;
	// a healthy one takes a few seconds.
	iterationDeadline = 5 * time.Minute
	// drainDeadline bounds the wait for every job to reach a final state
	// once the faults have stopped: leases of 1-2s, rescues and
	// promotions every second, and at most 3 attempts per job.
	drainDeadline = 2 * time.Minute
)

// TestCrashEmbedded runs the crash harness on the embedded store: each
// iteration kills `drover serve` with SIGKILL 1 to 3 times under load,
// restarts it on the same data directory, drains and checks the
// invariants (see the package comment).
func TestCrashEmbedded(t *testing.T) {
	t.Parallel()
	n := count(*iterationsFlag, quickIterations, shortIterations)
	runIterations(t, "embedded", n, parallelism(defaultParallel), func(t *testing.T) *lane {
		return &lane{prepare: func(_ context.Context, _ uint64, dir string) ([]string, []string, func(bool) string, error) {
			data := filepath.Join(dir, "data")
			args := []string{"serve", "--data-dir", data, "--log-format", "json"}
			return args, cleanEnv(), func(bool) string { return "" }, nil
		}}
	})
}

// TestCrashPostgres runs the crash harness on PostgreSQL, a fresh schema
// per iteration. The server is killed with SIGKILL; with
// DROVER_CRASH_PG_STOP=1, PostgreSQL itself is also stopped with pg_ctl
// stop -m immediate (a server of the test's own, see pgStopEnv).
func TestCrashPostgres(t *testing.T) {
	t.Parallel()
	n := count(*pgIterFlag, quickPGIterations, shortPGIterations)
	stop := os.Getenv(pgStopEnv) == "1"
	mode := "postgres"
	if stop {
		mode = "postgres+stop"
	}
	shared := ""
	if !stop {
		shared = pgtest.TestURL(t)
	}
	runIterations(t, mode, n, parallelism(defaultPGParallel), func(t *testing.T) *lane {
		ln := &lane{}
		url := shared
		if stop {
			ln.cluster = newPGCluster(t)
			url = ln.cluster.url()
		}
		ln.prepare = func(ctx context.Context, seed uint64, _ string) ([]string, []string, func(bool) string, error) {
			var b [4]byte
			if _, err := rand.Read(b[:]); err != nil {
				return nil, nil, nil, err
			}
			schema := fmt.Sprintf("drover_crash_%d_%s", seed, hex.EncodeToString(b[:]))
			// The node id stays the same across restarts, as a supervisor
			// keeps it: the restarted node takes its maintenance role
			// back at once instead of after the dead term's TTL.
			args := []string{"serve", "--database-schema", schema, "--node-id", fmt.Sprintf("crash-%d", seed), "--log-format", "json"}
			env := cleanEnv("DROVER_DATABASE_URL=" + url)
			done := func(ok bool) string {
				if !ok {
					return fmt.Sprintf("PostgreSQL schema %s kept", schema)
				}
				if err := dropSchema(ctx, url, schema); err != nil {
					return fmt.Sprintf("drop schema %s: %v", schema, err)
				}
				return ""
			}
			return args, env, done, nil
		}
		return ln
	})
}

// count is the number of iterations: the flag when given, else the
// quick default (smaller with -short).
func count(flagValue, quick, short int) int {
	switch {
	case flagValue > 0:
		return flagValue
	case testing.Short():
		return short
	default:
		return quick
	}
}

func parallelism(def int) int {
	if *parallelFlag > 0 {
		return *parallelFlag
	}
	return def
}

func dropSchema(ctx context.Context, url, schema string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		return err
	}
	defer pool.Close()
	_, err = pool.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`)
	return err
}

// A lane runs iterations one after the other. prepare returns an
// iteration's serve arguments and environment, and a function to call
// at its end with whether it passed, which returns a note for the log.
type lane struct {
	prepare func(ctx context.Context, seed uint64, dir string) (args, env []string, done func(ok bool) string, err error)
	cluster *pgCluster // the PostgreSQL the lane may stop, or nil
}

// totals add up the iterations of one test for its summary line.
type totals struct {
	iterations, failed    int
	kills, finalKills     int
	pgStops               int
	jobs, planned, acked  int
	unknown, unknownKept  int
	keyedRetried, replays int
	grants                int
	completes, fails      int
	leaseLost, rescued    int
	probes                int
	completed, discarded  int
	violations            int
	slowest, sumDurations time.Duration
	seedFirst, seedLast   uint64
}

// runIterations runs n iterations, at most par at once, each lane made
// by newLane, and logs one summary line at the end.
func runIterations(t *testing.T, mode string, n, par int, newLane func(*testing.T) *lane) {
	t.Helper()
	base := *seedFlag
	if base == 0 {
		base = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	// Not t.TempDir: a failing iteration keeps its directory.
	root, err := os.MkdirTemp("", "drover-crash-"+strings.ReplaceAll(mode, "+", "-")+"-") //nolint:usetesting // kept when an iteration fails
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("crash %s: %d iterations from seed %d, %d at a time; replay one with -seed=N -crash.iterations=1; directories under %s",
		mode, n, base, par, root)
	start := time.Now()
	var (
		mu   sync.Mutex
		tot  = totals{seedFirst: base}
		next = 0
		stop = false
	)
	// take hands out the next iteration number, or -1 when done (or
	// after a failure: the first failure is the report).
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		if stop || next >= n {
			return -1
		}
		next++
		return next - 1
	}
	var wg sync.WaitGroup
	for range min(par, n) {
		ln := newLane(t)
		wg.Go(func() {
			for i := take(); i >= 0; i = take() {
				seed := base + uint64(i)
				res, dir, err := runIteration(t.Context(), ln, mode, i, seed, root)
				mu.Lock()
				tot.add(res)
				failed := err != nil || len(res.violations) > 0
				if failed {
					tot.failed++
					stop = true
				}
				mu.Unlock()
				kept := dir
				if res != nil && res.note != "" {
					kept += "; " + res.note
				}
				switch {
				case err != nil:
					t.Errorf("crash %s iteration %d seed %d: %v\n(replay: -seed=%d -crash.iterations=1; kept: %s)", mode, i, seed, err, seed, kept)
				case failed:
					shown := res.violations
					if len(shown) > 20 {
						shown = append(shown[:20:20], fmt.Sprintf("... and %d more", len(res.violations)-20))
					}
					t.Errorf("crash %s iteration %d seed %d: %d violations:\n  %s\n(replay: -seed=%d -crash.iterations=1; kept: %s)",
						mode, i, seed, len(res.violations), strings.Join(shown, "\n  "), seed, kept)
				default:
					t.Logf("crash %s iteration %d seed %d: %s", mode, i, seed, res)
				}
			}
		})
	}
	wg.Wait()
	tot.seedLast = base + uint64(next) - 1
	if !t.Failed() {
		os.RemoveAll(root)
	}
	t.Logf("crash summary %s: %s in %s", mode, tot.String(), time.Since(start).Round(time.Second))
	if tot.iterations > 0 && (tot.kills == 0 || tot.acked == 0 || tot.completes == 0) {
		t.Errorf("crash %s exercised nothing: %d kills, %d acknowledged jobs, %d completions", mode, tot.kills, tot.acked, tot.completes)
	}
	if strings.HasSuffix(mode, "+stop") && tot.iterations >= 5 && tot.pgStops == 0 {
		t.Errorf("crash %s never stopped PostgreSQL in %d iterations", mode, tot.iterations)
	}
}

func (tot *totals) add(r *result) {
	if r == nil {
		return
	}
	tot.iterations++
	tot.kills += r.kills
	tot.finalKills += r.finalKills
	tot.pgStops += r.pgStops
	tot.jobs += r.jobs
	tot.acked += r.acked
	tot.planned += r.planned
	tot.unknown += r.unknown
	tot.unknownKept += r.unknownStored
	tot.keyedRetried += r.keyedRetried
	tot.replays += r.replays
	tot.grants += r.grants
	tot.completes += r.completes
	tot.fails += r.fails
	tot.leaseLost += r.leaseLost
	tot.probes += r.probes
	tot.rescued += r.rescued
	tot.completed += r.completed
	tot.discarded += r.discrd
	tot.violations += len(r.violations)
	tot.sumDurations += r.took
	tot.slowest = max(tot.slowest, r.took)
}

func (tot *totals) String() string {
	avg := time.Duration(0)
	if tot.iterations > 0 {
		avg = tot.sumDurations / time.Duration(tot.iterations)
	}
	return fmt.Sprintf("%d iterations (seeds %d-%d, %d failed), %d kill -9 under load + %d after the drain, %d PostgreSQL immediate stops; "+
		"%d jobs checked of %d planned (%d acknowledged; %d in requests without a key whose reply a crash cut off, %d of them stored), "+
		"%d keyed enqueues acknowledged on a retry, %d keyed replays; "+
		"%d leases, %d acknowledged completions, %d acknowledged failures, %d settles refused lease_lost, %d settles with a stale token refused, %d leases taken back after expiry; "+
		"final: %d completed, %d discarded; violations: %d; iteration avg %s, max %s",
		tot.iterations, tot.seedFirst, tot.seedLast, tot.failed, tot.kills, tot.finalKills, tot.pgStops,
		tot.jobs, tot.planned, tot.acked, tot.unknown, tot.unknownKept,
		tot.keyedRetried, tot.replays,
		tot.grants, tot.completes, tot.fails, tot.leaseLost, tot.probes, tot.rescued,
		tot.completed, tot.discarded, tot.violations, avg.Round(10*time.Millisecond), tot.slowest.Round(10*time.Millisecond))
}

func (r *result) String() string {
	return fmt.Sprintf("%d kill -9, %d PostgreSQL stops; %d jobs of %d planned (%d acknowledged, %d cut off, %d of them stored), %d keyed retries; "+
		"%d leases, %d completions, %d failures, %d lease_lost, %d stale probes, %d rescued; %d completed, %d discarded; drained in %s, ok in %s",
		r.kills, r.pgStops, r.jobs, r.planned, r.acked, r.unknown, r.unknownStored, r.keyedRetried,
		r.grants, r.completes, r.fails, r.leaseLost, r.probes, r.rescued, r.completed, r.discrd,
		r.drain.Round(10*time.Millisecond), r.took.Round(10*time.Millisecond))
}

// runIteration runs one iteration in a directory of its own under root,
// and returns what it checked, the directory (kept when it failed) and
// an error when it could not run to the end.
func runIteration(ctx context.Context, ln *lane, mode string, i int, seed uint64, root string) (res *result, dir string, err error) {
	began := time.Now()
	p := newPlan(seed, ln.cluster != nil)
	dir = filepath.Join(root, fmt.Sprintf("%s-%04d-seed-%d", strings.ReplaceAll(mode, "+", "-"), i, seed))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, dir, err
	}
	ctx, cancel := context.WithTimeout(ctx, iterationDeadline)
	defer cancel()
	args, env, done, err := ln.prepare(ctx, seed, dir)
	if err != nil {
		return nil, dir, err
	}
	srv := &server{args: args, env: env, logPath: filepath.Join(dir, "server.log")}
	l := newLedger()
	res = &result{}
	var (
		final, again []httpapi.Job
		c            *client
	)
	defer func() {
		res.took = time.Since(began)
		ok := err == nil && len(res.violations) == 0
		if !ok && final == nil && c != nil && srv.err() == nil {
			// Cut off before the listing: keep what the server holds now.
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			final, _ = listJobs(lctx, c)
			cancel()
		}
		srv.kill()
		res.note = done(ok)
		if ok {
			os.RemoveAll(dir)
			return
		}
		writeLedger(dir, p, l, final, again)
	}()

	if err := srv.start(ctx); err != nil {
		return res, dir, err
	}
	c = newClient(srv)
	defer c.tr.CloseIdleConnections()

	leaseCtx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var producers, workers sync.WaitGroup
	for pi, reqs := range p.producers {
		producers.Go(func() { produce(ctx, c, l, seed, pi, reqs) })
	}
	for wi := range p.workers {
		w := &worker{name: fmt.Sprintf("w%d", wi), c: c, l: l, seed: seed, leaseFor: p.leaseFor,
			rng: newRand(seed, uint64(100+wi))}
		workers.Go(func() { w.run(leaseCtx, ctx) })
	}

	for _, f := range p.faults {
		if !pause(ctx, f.after) {
			break
		}
		if err := inject(ctx, srv, ln.cluster, f, res); err != nil {
			return res, dir, fmt.Errorf("%s: %w", f, err)
		}
		c.tr.CloseIdleConnections()
	}

	// The faults have stopped: everything acknowledged must now finish.
	if err := waitGroup(ctx, &producers); err != nil {
		return res, dir, fmt.Errorf("producers did not finish: %w", err)
	}
	drainStart := time.Now()
	if err := drain(ctx, c, srv); err != nil {
		return res, dir, err
	}
	res.drain = time.Since(drainStart)
	stopWorkers()
	if err := waitGroup(ctx, &workers); err != nil {
		return res, dir, fmt.Errorf("workers did not stop: %w", err)
	}
	if err := srv.err(); err != nil {
		return res, dir, err
	}
	if final, err = listJobs(ctx, c); err != nil {
		return res, dir, err
	}
	// One more crash, after everything settled: nothing may change.
	srv.kill()
	res.finalKills++
	if err := srv.start(ctx); err != nil {
		return res, dir, fmt.Errorf("restart after the drain: %w", err)
	}
	c.tr.CloseIdleConnections()
	if again, err = listJobs(ctx, c); err != nil {
		return res, dir, err
	}
	checked := check(p, l, final, again)
	checked.kills, checked.pgStops, checked.finalKills, checked.drain = res.kills, res.pgStops, res.finalKills, res.drain
	*res = *checked
	return res, dir, nil
}

// inject carries out fault f and waits until the server is ready again.
func inject(ctx context.Context, srv *server, pg *pgCluster, f fault, res *result) error {
	if f.pgStop {
		if err := pg.stopImmediate(ctx); err != nil {
			return err
		}
		res.pgStops++
	}
	if f.kill {
		srv.kill()
		res.kills++
	}
	if f.pgStop {
		pause(ctx, f.down)
		if err := pg.start(ctx); err != nil {
			return err
		}
	}
	if f.kill {
		return srv.start(ctx)
	}
	// The server lived through PostgreSQL's restart: it must recover
	// by itself.
	if err := waitReady(ctx, srv.base(), nil); err != nil {
		return fmt.Errorf("the server did not recover after PostgreSQL came back: %w", err)
	}
	return srv.err()
}

// drain waits until no job is left in a state that is not final.
func drain(ctx context.Context, c *client, srv *server) error {
	ctx, cancel := context.WithTimeout(ctx, drainDeadline)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var (
		last    int
		lastErr error
	)
	for {
		n, err := unfinished(ctx, c)
		if err == nil && n == 0 {
			return nil
		}
		last, lastErr = n, err
		if err := srv.err(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("jobs did not all reach a final state within %s once the faults stopped: %d left (last error: %w)", drainDeadline, last, lastErr)
		case <-tick.C:
		}
	}
}

// waitGroup waits for wg or for ctx to end.
func waitGroup(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeLedger writes what a failed iteration did to dir/ledger.json, for
// the post-mortem.
func writeLedger(dir string, p *plan, l *ledger, final, again []httpapi.Job) {
	l.mu.Lock()
	defer l.mu.Unlock()
	faults := make([]string, len(p.faults))
	for i, f := range p.faults {
		faults[i] = f.String()
	}
	b, err := json.MarshalIndent(map[string]any{
		"seed": p.seed, "workers": p.workers, "lease_for": p.leaseFor.String(), "faults": faults,
		"ledger": l, "jobs_after_drain": final, "jobs_after_last_kill": again,
	}, "", "  ")
	if err == nil {
		_ = os.WriteFile(filepath.Join(dir, "ledger.json"), b, 0o600)
	}
}
