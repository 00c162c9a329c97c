package sqlitestore_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// crashChildEnv makes the test binary act as the crash test's child.
const crashChildEnv = "DROVER_CRASH_CHILD_DIR"

// TestCrashKill9 runs a child process that enqueues and completes jobs
// under concurrent load, printing a line for every acknowledgement, kills
// it with SIGKILL at a random moment, reopens the data directory and checks
// that every acknowledged enqueue is present and every acknowledged
// completion is still completed. DROVER_CRASH_ITERATIONS sets how many
// times (default 20; make crash runs more).
func TestCrashKill9(t *testing.T) { //nolint:paralleltest // runs alone, so other tests' load cannot starve the child it kills
	if os.Getenv(crashChildEnv) != "" {
		t.Skip("running as the crash child")
	}
	iterations := 20
	if v := os.Getenv("DROVER_CRASH_ITERATIONS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DROVER_CRASH_ITERATIONS=%q: want a positive integer", v)
		}
		iterations = n
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("DROVER_CRASH_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("DROVER_CRASH_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("seed %d (replay with DROVER_CRASH_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	totalE, totalC := 0, 0
	for i := range iterations {
		// The same directory across iterations: each run recovers what
		// the previous crashes left.
		delay := time.Duration(50+rng.IntN(400)) * time.Millisecond
		e, c := crashOnce(t, dir, delay)
		totalE += e
		totalC += c
		if t.Failed() {
			t.Fatalf("iteration %d failed; data directory kept at %s", i, dir)
		}
	}
	t.Logf("%d iterations: %d acknowledged enqueues and %d acknowledged completions all survived kill -9", iterations, totalE, totalC)
	if totalE == 0 || totalC == 0 {
		t.Fatalf("the child acknowledged %d enqueues and %d completions: the test did not exercise anything", totalE, totalC)
	}
}

func crashOnce(t *testing.T, dir string, delay time.Duration) (enqueued, completed int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		acked    = map[job.ID]bool{}
		complete = map[job.ID]bool{}
		ready    = make(chan struct{})
		readDone = make(chan struct{})
	)
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			kind, idText, ok := strings.Cut(sc.Text(), " ")
			if kind == "READY" {
				once.Do(func() { close(ready) })
				continue
			}
			id, err := strconv.ParseInt(idText, 10, 64)
			if !ok || err != nil {
				continue // a partial line cut by the kill
			}
			mu.Lock()
			switch kind {
			case "E":
				acked[job.ID(id)] = true
			case "C":
				complete[job.ID(id)] = true
			}
			mu.Unlock()
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill() // best effort: the test fails either way
		t.Fatal("crash child did not start")
	}
	time.Sleep(delay) // the random moment of the crash, not a wait for a condition
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-readDone
	cmd.Wait() //nolint:errcheck // killed on purpose

	s, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatalf("reopen after kill -9: %v", err)
	}
	defer s.Close()
	ctx := t.Context()
	mu.Lock()
	defer mu.Unlock()
	for id := range acked {
		j, err := s.Get(ctx, id)
		if err != nil {
			t.Errorf("acknowledged enqueue of job %d lost: %v", id, err)
			continue
		}
		if complete[id] && j.State != job.StateCompleted {
			t.Errorf("acknowledged completion of job %d lost: state %s", id, j.State)
		}
	}
	for id := range complete {
		if !acked[id] {
			// Completed jobs may come from an earlier iteration; they
			// must still exist and be completed.
			j, err := s.Get(ctx, id)
			if err != nil || j.State != job.StateCompleted {
				t.Errorf("acknowledged completion of job %d lost: %v %v", id, j, err)
			}
		}
	}
	// The in-memory counts rebuilt at open agree with the rows.
	qs, err := s.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		for st, n := range q.Counts {
			res, err := s.List(ctx, store.ListParams{Queues: []string{q.Name}, States: []job.State{st}, Limit: store.MaxListLimit})
			if err != nil {
				t.Fatal(err)
			}
			if n <= store.MaxListLimit && len(res.Jobs) != n {
				t.Errorf("queue %s %s: count %d but %d rows", q.Name, st, n, len(res.Jobs))
			}
		}
	}
	return len(acked), len(complete)
}

// TestCrashChild is the crash test's child; it does nothing unless run by
// TestCrashKill9.
func TestCrashChild(t *testing.T) {
	t.Parallel()
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("only run as the crash test's child")
	}
	s, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var outMu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	emit := func(line string) {
		outMu.Lock()
		// Written straight through: the parent must see every line whose
		// acknowledgement happened before the kill.
		w.WriteString(line + "\n") //nolint:errcheck // a failed write to the parent's pipe means it is gone
		w.Flush()
		outMu.Unlock()
	}
	emit("READY 0")
	ctx := t.Context()
	var wg sync.WaitGroup
	for p := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				n := 1 + (i+p)%5
				ins := make([]*job.Insert, n)
				for k := range ins {
					sp := job.Spec{Kind: "crash", Args: json.RawMessage(fmt.Sprintf(`{"p":%d,"i":%d}`, p, i))}
					ins[k], _ = sp.Prepare(time.Now(), job.Limits{}, "")
				}
				res, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child insert:", err)
					os.Exit(3)
				}
				for _, r := range res {
					emit("E " + strconv.FormatInt(int64(r.Job.ID), 10))
				}
			}
		}()
	}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				jobs, err := s.Lease(ctx, store.LeaseParams{Now: time.Now(), Queues: []string{"default"}, Limit: 4, LeaseFor: time.Minute, Worker: "crash"})
				if err != nil {
					fmt.Fprintln(os.Stderr, "child lease:", err)
					os.Exit(3)
				}
				for _, j := range jobs {
					res, err := s.Complete(ctx, store.CompleteParams{Now: time.Now(), Jobs: []store.CompleteJob{{ID: j.ID, LeaseToken: j.LeaseToken}}})
					if err != nil || res[0].Err != nil {
						fmt.Fprintln(os.Stderr, "child complete:", err, res)
						os.Exit(3)
					}
					emit("C " + strconv.FormatInt(int64(j.ID), 10))
				}
			}
		}()
	}
	wg.Wait()
}
