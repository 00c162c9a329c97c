package sqlitestore_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"
)

// The fault tests run the real store over sqlitevfs's simulated disk. Their
// case counts are the CI minimum; DROVER_FAULT_LONG=1 (make faults) runs
// five times as many, and DROVER_FAULT_SEED replays a run's random choices.

func faultCases(t *testing.T, quick int) int {
	t.Helper()
	if os.Getenv("DROVER_FAULT_LONG") != "" {
		return quick * 5
	}
	return quick
}

func faultSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DROVER_FAULT_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("DROVER_FAULT_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("seed %d (replay with DROVER_FAULT_SEED=%d)", seed, seed)
	return seed
}

// caseRand is the random source of one case of a seeded run, apart from
// every other case's.
func caseRand(seed uint64, ids ...int) *rand.Rand {
	h := fnv.New64a()
	for _, id := range ids {
		fmt.Fprintf(h, "%d/", id)
	}
	return rand.New(rand.NewPCG(seed, h.Sum64()))
}

// faultOpts are the store options of the fault tests: small checkpoints,
// so that the database file's own fsyncs are among the failure points.
func faultOpts(f *sqlitevfs.Faults) sqlitestore.Options {
	return sqlitestore.Options{Faults: f, CheckpointPages: 8}
}

// entry is what the ledger knows of one enqueued job, by its tag.
type entry struct {
	id    job.ID
	acked bool // the enqueue was acknowledged
	// seen: the enqueue was refused, yet a later lease returned the job
	// (a refused write may be present after a power loss).
	seen  bool
	state job.State // the last acknowledged state
	// doubt: a refused write on the job may or may not have been applied.
	doubt bool
}

// ledger is the test's own record of what the store acknowledged. It is
// safe for concurrent use.
type ledger struct {
	mu      sync.Mutex
	seq     int
	jobs    map[string]*entry
	acks    int // acknowledged writes
	refused int // refused writes
}

func newLedger() *ledger { return &ledger{jobs: map[string]*entry{}} }

// worker drives the store as producers and workers do: it enqueues
// batches, leases, completes and fails. Each call of step makes one write.
type worker struct {
	st   store.Store
	l    *ledger
	rng  *rand.Rand
	held []*job.Job // leased, not settled
}

var faultNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// step makes one write and returns its error.
func (w *worker) step(ctx context.Context) error {
	switch r := w.rng.IntN(10); {
	case r < 5 || len(w.held) == 0 && r < 7:
		return w.enqueue(ctx)
	case len(w.held) == 0:
		return w.lease(ctx)
	case r < 8:
		return w.complete(ctx)
	default:
		return w.fail(ctx)
	}
}

func (w *worker) enqueue(ctx context.Context) error {
	n := 1 + w.rng.IntN(3)
	w.l.mu.Lock()
	tags := make([]string, n)
	for i := range tags {
		w.l.seq++
		tags[i] = fmt.Sprintf("j%d", w.l.seq)
		w.l.jobs[tags[i]] = &entry{}
	}
	w.l.mu.Unlock()
	ins := make([]*job.Insert, n)
	for i, tag := range tags {
		sp := job.Spec{Kind: "fault", Tags: []string{tag}, MaxAttempts: 3, Args: []byte(`{"pad":"` + tag + `-0123456789abcdef0123456789abcdef"}`)}
		in, err := sp.Prepare(faultNow, job.Limits{}, "")
		if err != nil {
			return fmt.Errorf("test bug: %w", err)
		}
		ins[i] = in
	}
	res, err := w.st.Insert(ctx, store.InsertParams{Now: faultNow, Jobs: ins})
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	if err != nil {
		w.l.refused++
		return err
	}
	w.l.acks++
	for i, r := range res {
		e := w.l.jobs[tags[i]]
		e.id, e.acked = r.Job.ID, true
		if e.state == "" {
			// Not yet leased by another writer that got here first.
			e.state = job.StateAvailable
		}
	}
	return nil
}

func (w *worker) lease(ctx context.Context) error {
	jobs, err := w.st.Lease(ctx, store.LeaseParams{Now: faultNow, Queues: []string{job.DefaultQueue}, Limit: 1 + w.rng.IntN(2), LeaseFor: time.Hour, Worker: "fault"})
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	if err != nil {
		// A refused lease may have leased jobs: the ledger allows running
		// for every available job anyway.
		w.l.refused++
		return err
	}
	w.l.acks++
	for _, j := range jobs {
		e := w.l.jobs[j.Tags[0]]
		if !e.acked {
			e.seen, e.id = true, j.ID
		}
		e.state = job.StateRunning
		w.held = append(w.held, j)
	}
	return nil
}

func (w *worker) complete(ctx context.Context) error {
	j := w.held[0]
	w.held = w.held[1:]
	res, err := w.st.Complete(ctx, store.CompleteParams{Now: faultNow, Jobs: []store.CompleteJob{{ID: j.ID, LeaseToken: j.LeaseToken}}})
	if err == nil && res[0].Err != nil {
		return fmt.Errorf("complete of a held lease refused: %w", res[0].Err)
	}
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	e := w.l.jobs[j.Tags[0]]
	if err != nil {
		w.l.refused++
		e.doubt = true
		return err
	}
	w.l.acks++
	e.state = job.StateCompleted
	return nil
}

func (w *worker) fail(ctx context.Context) error {
	j := w.held[0]
	w.held = w.held[1:]
	got, err := w.st.Fail(ctx, store.FailParams{
		Now: faultNow, ID: j.ID, LeaseToken: j.LeaseToken, Message: "boom",
		// Far in the future, so the job is not leased again.
		RetryAt: faultNow.Add(24 * time.Hour), Discard: w.rng.IntN(3) == 0,
	})
	w.l.mu.Lock()
	defer w.l.mu.Unlock()
	e := w.l.jobs[j.Tags[0]]
	if err != nil {
		w.l.refused++
		e.doubt = true
		return err
	}
	w.l.acks++
	e.state = got.State
	return nil
}

// checkLedger checks the invariants against a store reopened after the
// faults: every acknowledged enqueue is present, once; every acknowledged
// completion and failure stands (finished stays final); no job exists that
// nobody enqueued; attempts stay within max_attempts. It returns how many
// refused enqueues were present after all.
func checkLedger(t *testing.T, st store.Store, l *ledger) (refusedPresent int) {
	t.Helper()
	ctx := t.Context()
	byTag := map[string]*job.Job{}
	var after job.ID
	for {
		page, err := st.List(ctx, store.ListParams{After: after, Limit: store.MaxListLimit})
		if err != nil {
			t.Fatalf("list after reopen: %v", err)
		}
		for _, j := range page.Jobs {
			if len(j.Tags) != 1 {
				t.Errorf("job %d has tags %v: not one this test enqueued", j.ID, j.Tags)
				continue
			}
			if prev := byTag[j.Tags[0]]; prev != nil {
				t.Errorf("jobs %d and %d both hold tag %s: one enqueue stored twice", prev.ID, j.ID, j.Tags[0])
			}
			byTag[j.Tags[0]] = j
			if j.Attempt > j.MaxAttempts {
				t.Errorf("job %d: attempt %d > max_attempts %d", j.ID, j.Attempt, j.MaxAttempts)
			}
		}
		if page.Next == 0 {
			break
		}
		after = page.Next
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for tag, j := range byTag {
		e := l.jobs[tag]
		switch {
		case e == nil:
			t.Errorf("job %d (tag %s) was never enqueued", j.ID, tag)
		case !e.acked:
			refusedPresent++
			if !e.seen && j.State != job.StateAvailable && j.State != job.StateRunning {
				t.Errorf("refused enqueue %s is present in state %s", tag, j.State)
			}
		}
	}
	for tag, e := range l.jobs {
		if !e.acked && !e.seen {
			continue
		}
		j := byTag[tag]
		if j == nil {
			t.Errorf("acknowledged enqueue %s (job %d, seen by a lease: %v) is missing", tag, e.id, e.seen)
			continue
		}
		if j.ID != e.id {
			t.Errorf("acknowledged enqueue %s was job %d, is now job %d", tag, e.id, j.ID)
		}
		allowed := []job.State{e.state}
		switch {
		case e.doubt:
			allowed = append(allowed, job.StateRunning, job.StateCompleted, job.StateRetryable, job.StateDiscarded)
		case e.state == job.StateAvailable:
			// A refused lease may have taken it.
			allowed = append(allowed, job.StateRunning)
		}
		if !slices.Contains(allowed, j.State) {
			t.Errorf("job %d (%s): state %s after reopen, acknowledged %s (in doubt: %v)", j.ID, tag, j.State, e.state, e.doubt)
		}
	}
	return refusedPresent
}

// checkWorks checks that a reopened store takes writes again, recording
// them in l.
func checkWorks(t *testing.T, st store.Store, l *ledger) {
	t.Helper()
	w := &worker{st: st, l: l, rng: rand.New(rand.NewPCG(1, 1))}
	if err := w.enqueue(t.Context()); err != nil {
		t.Fatalf("enqueue after reopen: %v", err)
	}
	if err := w.lease(t.Context()); err != nil || len(w.held) == 0 {
		t.Fatalf("lease after reopen: %v (%d jobs)", err, len(w.held))
	}
	if err := w.complete(t.Context()); err != nil {
		t.Fatalf("complete after reopen: %v", err)
	}
}

// loseAndReopen cuts the power under st, closes it, drops unsynced writes
// and reopens the data directory on the real disk.
func loseAndReopen(t *testing.T, st *sqlitestore.Store, faults *sqlitevfs.Faults, mode sqlitevfs.LossMode, rng *rand.Rand) *sqlitestore.Store {
	t.Helper()
	faults.CutPower()
	_ = st.Close() // fails: the power is off
	if err := faults.PowerLoss(mode, rng); err != nil {
		t.Fatal(err)
	}
	st2, err := sqlitestore.Open(st.Dir(), sqlitestore.Options{})
	if err != nil {
		t.Fatalf("reopen after the power loss: %v", err)
	}
	return st2
}

// TestFsyncFailure fails the k-th fsync, for k = 1..N, under a workload of
// enqueues, leases, completions and failures (one writer for odd k, four
// concurrent ones sharing group commits for even k). The write whose fsync
// failed and every write after it must be refused with job.ErrUnavailable,
// and Ping must fail (so /readyz turns unready). Then the power is lost,
// dropping the unsynced writes (all of them, or a random part), and the
// store is reopened: every acknowledged write must be there.
func TestFsyncFailure(t *testing.T) {
	t.Parallel()
	n := faultCases(t, 100)
	seed := faultSeed(t)
	var refusedPresent, acks atomic.Int64
	t.Cleanup(func() {
		t.Logf("%d fsync failure points: %d acknowledged writes all survived; %d refused enqueues were present after the power loss (allowed)", n, acks.Load(), refusedPresent.Load())
	})
	for k := 1; k <= n; k++ {
		t.Run(fmt.Sprintf("fsync_%d", k), func(t *testing.T) {
			t.Parallel()
			rp, a := fsyncFailureCase(t, k, seed)
			refusedPresent.Add(int64(rp))
			acks.Add(int64(a))
		})
	}
}

func fsyncFailureCase(t *testing.T, k int, seed uint64) (refusedPresent, acks int) {
	rng := caseRand(seed, k)
	faults := sqlitevfs.NewFaults()
	st, err := sqlitestore.Open(t.TempDir(), faultOpts(faults))
	if err != nil {
		t.Fatal(err)
	}
	faults.FailSync(k)
	l := newLedger()
	writers := 1
	if k%2 == 0 {
		writers = 4
	}
	const maxSteps = 2000
	var (
		failedSeen atomic.Bool
		steps      atomic.Int64
		wg         sync.WaitGroup
		errs       = make(chan error, writers*8)
	)
	for i := range writers {
		wg.Add(1)
		w := &worker{st: st, l: l, rng: caseRand(seed, k, i)}
		go func() {
			defer wg.Done()
			after := 0
			for steps.Add(1) <= maxSteps {
				startedAfterFailure := failedSeen.Load()
				err := w.step(t.Context())
				switch {
				case err == nil && startedAfterFailure:
					errs <- errors.New("a write that started after a failed fsync was acknowledged")
					return
				case err != nil && !errors.Is(err, job.ErrUnavailable):
					errs <- fmt.Errorf("write refused with %w, want job.ErrUnavailable", err)
					return
				case err != nil:
					failedSeen.Store(true)
				}
				if startedAfterFailure {
					if after++; after == 3 {
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if !failedSeen.Load() {
		t.Fatalf("the workload made %d fsyncs without reaching fsync %d", faults.Syncs(), k)
	}
	if err := st.Ping(t.Context()); !errors.Is(err, job.ErrUnavailable) {
		t.Errorf("Ping after a failed fsync = %v, want job.ErrUnavailable", err)
	}
	mode := sqlitevfs.LossMode(k / 2 % 2)
	st2 := loseAndReopen(t, st, faults, mode, rng)
	defer st2.Close()
	refusedPresent = checkLedger(t, st2, l)
	checkWorks(t, st2, l)
	return refusedPresent, l.acks
}

// TestStorageFull runs the workload with the disk filling up after N bytes,
// for N at many points (an offset into a page, a WAL frame or a header each
// time). The write that hits the full disk must fail with
// job.ErrStorageFull, the store must stay healthy (no sticky failure, Ping
// fine), and once space returns it must take writes again without a
// reopen. Then it is closed (cleanly, or by a power loss), reopened, and
// every acknowledged write must be there and no refused enqueue.
func TestStorageFull(t *testing.T) {
	t.Parallel()
	n := faultCases(t, 50)
	seed := faultSeed(t)
	var acks atomic.Int64
	t.Cleanup(func() {
		t.Logf("%d full-disk points: every write on the full disk refused with storage_full, %d acknowledged writes all survived, no refused enqueue present", n, acks.Load())
	})
	for i := range n {
		// 7919 is prime: the budgets end at ever different offsets
		// within pages and frames, across the first ~50 commits.
		budget := int64(i)*7919 + int64(i%7)*13
		t.Run(fmt.Sprintf("bytes_%d", budget), func(t *testing.T) {
			t.Parallel()
			acks.Add(int64(storageFullCase(t, i, budget, seed)))
		})
	}
}

func storageFullCase(t *testing.T, i int, budget int64, seed uint64) (acks int) {
	rng := caseRand(seed, i)
	faults := sqlitevfs.NewFaults()
	st, err := sqlitestore.Open(t.TempDir(), faultOpts(faults))
	if err != nil {
		t.Fatal(err)
	}
	faults.SetSpace(budget)
	l := newLedger()
	w := &worker{st: st, l: l, rng: caseRand(seed, i, -1)}
	ctx := t.Context()
	var first error
	for range 400 {
		if err := w.step(ctx); err != nil {
			first = err
			break
		}
	}
	if first == nil {
		t.Fatalf("400 writes (%d bytes) fit in a budget of %d bytes", faults.Written(), budget)
	}
	if !errors.Is(first, job.ErrStorageFull) || job.Code(first) != "storage_full" {
		t.Fatalf("write on a full disk: %v (code %s), want job.ErrStorageFull", first, job.Code(first))
	}
	// Still full: writes keep failing the same way, nothing is poisoned.
	for range 3 {
		if err := w.step(ctx); err != nil && !errors.Is(err, job.ErrStorageFull) {
			t.Fatalf("write on a still full disk: %v, want job.ErrStorageFull", err)
		}
	}
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping on a full disk: %v, want nil (reads still work)", err)
	}
	faults.SetSpace(-1)
	for s := range 20 {
		if err := w.step(ctx); err != nil {
			t.Fatalf("write %d after space returned: %v", s, err)
		}
	}
	var st2 *sqlitestore.Store
	if i%2 == 0 {
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		if st2, err = sqlitestore.Open(st.Dir(), sqlitestore.Options{}); err != nil {
			t.Fatal(err)
		}
	} else {
		st2 = loseAndReopen(t, st, faults, sqlitevfs.TearUnsynced, rng)
	}
	defer st2.Close()
	if present := checkLedger(t, st2, l); present != 0 {
		t.Errorf("%d enqueues refused for a full disk are present after reopen", present)
	}
	checkWorks(t, st2, l)
	return l.acks
}

// TestPowerLoss cuts the power at a random moment while four writers run,
// drops the writes no fsync covered (all of them, or a random part of them
// as a disk with a write-back cache does), reopens, and checks that every
// acknowledged write survived. Every third case goes through three power
// losses on the same data directory.
func TestPowerLoss(t *testing.T) {
	t.Parallel()
	n := faultCases(t, 30)
	seed := faultSeed(t)
	var losses, acks atomic.Int64
	t.Cleanup(func() {
		t.Logf("%d cases, %d power losses: %d acknowledged writes all survived", n, losses.Load(), acks.Load())
	})
	for i := range n {
		t.Run(fmt.Sprintf("case_%d", i), func(t *testing.T) {
			t.Parallel()
			rng := caseRand(seed, i)
			dir := t.TempDir()
			l := newLedger()
			cycles := 1
			if i%3 == 0 {
				cycles = 3
			}
			for c := range cycles {
				powerLossCycle(t, dir, l, rng, sqlitevfs.LossMode((i+c)%2))
				if t.Failed() {
					t.Fatalf("cycle %d of %d failed", c+1, cycles)
				}
				losses.Add(1)
			}
			acks.Add(int64(l.acks))
		})
	}
}

func powerLossCycle(t *testing.T, dir string, l *ledger, rng *rand.Rand, mode sqlitevfs.LossMode) {
	faults := sqlitevfs.NewFaults()
	st, err := sqlitestore.Open(dir, faultOpts(faults))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	l.mu.Lock()
	cutAt := l.acks + 5 + rng.IntN(60)
	l.mu.Unlock()
	var (
		wg   sync.WaitGroup
		once sync.Once
		stop = make(chan struct{})
	)
	for i := range 4 {
		wg.Add(1)
		w := &worker{st: st, l: l, rng: caseRand(rng.Uint64(), i)}
		go func() {
			defer wg.Done()
			for range 500 {
				select {
				case <-stop:
					return
				default:
				}
				err := w.step(t.Context())
				l.mu.Lock()
				cut := l.acks >= cutAt
				l.mu.Unlock()
				if cut {
					// Cut while the other writers are mid-write.
					once.Do(func() { faults.CutPower(); close(stop) })
				}
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	once.Do(func() { faults.CutPower(); close(stop) })
	st2 := loseAndReopen(t, st, faults, mode, rng)
	checkLedger(t, st2, l)
	if err := st2.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBitFlipsAreDetected flips one bit at a random place of a cleanly
// closed data file holding jobs, in a copy each time, and checks that Open
// refuses it with ErrCorrupt naming the damaged page, rather than serving
// changed data. Places that decide how the file is read at all (the SQLite
// header fields, a page's checksum and tag) get a case each as well.
//
// Two header fields hold no data and are left out of page 1's checksum,
// because SQLite's backup rewrites them (see sqlitevfs): the schema cookie
// (offsets 40-43) and the number of the SQLite version that last wrote the
// file (96-99). Random flips skip them; a case each checks that a flip
// there opens with every job intact.
func TestBitFlipsAreDetected(t *testing.T) {
	t.Parallel()
	n := faultCases(t, 100)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	src := t.TempDir()
	st, err := sqlitestore.Open(src, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	l := newLedger()
	w := &worker{st: st, l: l, rng: caseRand(seed, 1)}
	for range 300 {
		if err := w.step(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	clean, err := os.ReadFile(filepath.Join(src, sqlitestore.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	pages := len(clean) / sqlitevfs.PageSize
	t.Logf("data file of %d pages holding %d jobs", pages, len(l.jobs))
	harmless := func(off int) bool { return off >= 40 && off < 44 || off >= 96 && off < 100 }

	type flip struct{ off, bit int }
	last := (pages - 1) * sqlitevfs.PageSize
	flips := []flip{
		{0, 0},  // the "SQLite format 3" string
		{16, 4}, // the page size
		{17, 1},
		{20, 3},                            // the reserved bytes
		{24, 2},                            // the change counter
		{28, 0},                            // the page count
		{31, 6},                            // the page count, low bits
		{92, 5},                            // the version-valid-for
		{100, 1},                           // page 1's b-tree header
		{last + sqlitevfs.PageSize - 8, 0}, // a checksum
		{last + sqlitevfs.PageSize - 1, 7}, // a tag
		{last + 100, 5},                    // row data
	}
	for len(flips) < n+12 {
		if off := rng.IntN(len(clean)); !harmless(off) {
			flips = append(flips, flip{off, rng.IntN(8)})
		}
	}
	// The unchanged file opens: the failures below are the flips'.
	checkCopy(t, clean, l)
	for _, f := range flips {
		t.Run(fmt.Sprintf("byte_%d_bit_%d", f.off, f.bit), func(t *testing.T) {
			t.Parallel()
			data := slices.Clone(clean)
			data[f.off] ^= 1 << f.bit
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, sqlitestore.DBFile), data, 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := sqlitestore.Open(dir, sqlitestore.Options{})
			if err == nil {
				st.Close()
				t.Fatalf("a data file with byte %d flipped opened without error", f.off)
			}
			var ce *sqlitevfs.CorruptError
			if !errors.Is(err, sqlitestore.ErrCorrupt) || !errors.As(err, &ce) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
			if want := f.off/sqlitevfs.PageSize + 1; int(ce.Page) != want {
				t.Fatalf("Open = %v, want page %d named", err, want)
			}
		})
	}
	for _, off := range []int{40, 43, 96, 99} {
		t.Run(fmt.Sprintf("harmless_byte_%d", off), func(t *testing.T) {
			t.Parallel()
			data := slices.Clone(clean)
			data[off] ^= 1
			checkCopy(t, data, l)
		})
	}
}

// checkCopy opens a copy of a data file and checks the jobs in it.
func checkCopy(t *testing.T, data []byte, l *ledger) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, sqlitestore.DBFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("the unchanged data file does not open: %v", err)
	}
	defer st.Close()
	checkLedger(t, st, l)
}

// TestFailedBatchFailsEveryWriter holds the writer inside one commit's
// fsync while 20 more writers queue, so that they all share the next
// commit, and makes that commit fail. Every one of them must get the error,
// none an acknowledgement. For a failed fsync the error is
// job.ErrUnavailable and the store stays failed; for a full disk it is
// job.ErrStorageFull and the store takes writes again once space returns.
func TestFailedBatchFailsEveryWriter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		full bool
		want error
	}{
		{"failed_fsync", false, job.ErrUnavailable},
		{"full_disk", true, job.ErrStorageFull},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const writers = 20
			faults := sqlitevfs.NewFaults()
			// The case counts the writer's own fsyncs, so no background
			// checkpoint may slip one in between.
			st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{Faults: faults, CheckpointEvery: -1})
			if err != nil {
				t.Fatal(err)
			}
			l := newLedger()
			ctx := t.Context()
			hold := faults.Syncs() + 1
			entered, release := make(chan struct{}), make(chan struct{})
			faults.BeforeSync(func(n int) {
				if n != hold {
					return
				}
				close(entered)
				<-release
				if tc.full {
					faults.SetSpace(0) // the next commit's frames find no room
				}
			})
			if !tc.full {
				faults.FailSync(2) // the fsync after the held one
			}
			before := st.Stats().Requests
			first := make(chan error, 1)
			go func() {
				w := &worker{st: st, l: l, rng: rand.New(rand.NewPCG(1, 0))}
				first <- w.enqueue(ctx)
			}()
			select {
			case <-entered:
			case err := <-first:
				t.Fatalf("the first write returned (%v) without reaching its fsync", err)
			}
			errs := make(chan error, writers)
			for i := range writers {
				w := &worker{st: st, l: l, rng: caseRand(1, i)}
				go func() { errs <- w.enqueue(ctx) }()
			}
			waitFor(t, "the writers to queue behind the held commit", func() bool { return st.Stats().Queued == writers })
			close(release)
			if err := <-first; err != nil {
				t.Fatalf("the held write failed: %v", err)
			}
			for range writers {
				if err := <-errs; !errors.Is(err, tc.want) {
					t.Errorf("a writer of the failed batch got %v, want %v", err, tc.want)
				}
			}
			if got := st.Stats().Requests - before; got != 1 {
				t.Errorf("%d requests committed, want only the held one", got)
			}
			faults.BeforeSync(nil)
			var st2 *sqlitestore.Store
			if tc.full {
				faults.SetSpace(-1)
				if err := st.Ping(ctx); err != nil {
					t.Fatalf("Ping after a full disk: %v", err)
				}
				w := &worker{st: st, l: l, rng: rand.New(rand.NewPCG(2, 0))}
				if err := w.enqueue(ctx); err != nil {
					t.Fatalf("enqueue once space returned: %v", err)
				}
				if err := st.Close(); err != nil {
					t.Fatal(err)
				}
				if st2, err = sqlitestore.Open(st.Dir(), sqlitestore.Options{}); err != nil {
					t.Fatal(err)
				}
			} else {
				if err := st.Ping(ctx); !errors.Is(err, job.ErrUnavailable) {
					t.Fatalf("Ping after a failed fsync = %v, want job.ErrUnavailable", err)
				}
				st2 = loseAndReopen(t, st, faults, sqlitevfs.DropUnsynced, nil)
			}
			defer st2.Close()
			if present := checkLedger(t, st2, l); present != 0 {
				t.Errorf("%d jobs of the failed batch are present after reopen", present)
			}
		})
	}
}

// waitFor polls cond until it holds; the deadline is generous, for a
// loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUnsealedDataFileOpensWithWarning opens a data file made without page
// checksums (as every data file was before them): it must open and work,
// with a warning that bit flips in it go undetected.
func TestUnsealedDataFileOpensWithWarning(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(dir, sqlitestore.DBFile)+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.ExecContext(t.Context(), "CREATE TABLE made_elsewhere (v TEXT)"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	st, err := sqlitestore.Open(dir, sqlitestore.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("open an unsealed data file: %v", err)
	}
	defer st.Close()
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "no page checksums") {
		t.Fatalf("no warning about the missing checksums; logs: %s", logs.String())
	}
	checkWorks(t, st, newLedger())
}
