package drover_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// openPostgres opens a Store on a fresh schema of the test database,
// closed when the test ends.
func openPostgres(t *testing.T, url, schema, node string) *drover.Store {
	t.Helper()
	st, err := drover.OpenPostgres(t.Context(), url, &drover.PostgresOptions{Schema: schema, NodeID: node, Logger: discard})
	if err != nil {
		t.Fatalf("OpenPostgres: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return st
}

// TestInsertTxCommitsWithTheCaller enqueues inside the caller's own
// transaction: the job exists exactly when the transaction commits, and
// a worker on the same database runs it then.
func TestInsertTxCommitsWithTheCaller(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = schema
	pool, err := pgxpool.NewWithConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// The caller's pool reaches a schema that does not exist yet: the
	// first store on it must create it, so open one through the URL first.
	openPostgres(t, url, schema, "setup")
	st, err := drover.NewPostgres(t.Context(), pool, &drover.PostgresOptions{NodeID: "app", Logger: discard})
	if err != nil {
		t.Fatalf("NewPostgres: %v", err)
	}
	t.Cleanup(func() { st.Close() })

	ran := make(chan string, 4)
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(ctx context.Context, j *drover.Job[testArgs]) error {
		ran <- j.Args.Name
		return nil
	}))
	c, err := drover.NewClient(st, &drover.Config{Workers: ws, Queues: map[string]drover.QueueConfig{"default": {MaxWorkers: 2}}, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 10*time.Second)
		defer cancel()
		c.Stop(ctx) //nolint:errcheck // the test is over
	})

	// Rolled back: the job never existed and never runs.
	tx, err := pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	rolled, err := c.InsertTx(t.Context(), tx, testArgs{Name: "rolled back"}, nil)
	if err != nil {
		t.Fatalf("InsertTx: %v", err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(t.Context(), rolled.Job.ID); !errors.Is(err, drover.ErrNotFound) {
		t.Fatalf("Get after rollback: %v, want not found", err)
	}

	// Committed: invisible and not run until the commit, then run.
	tx, err = pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	kept, err := c.InsertTx(t.Context(), tx, testArgs{Name: "committed"}, nil)
	if err != nil {
		t.Fatalf("InsertTx: %v", err)
	}
	if _, err := tx.Exec(t.Context(), `CREATE TABLE app_orders (id int)`); err != nil {
		t.Fatal(err)
	}
	select {
	case name := <-ran:
		t.Fatalf("job %q ran before its transaction committed", name)
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := c.Get(t.Context(), kept.Job.ID); !errors.Is(err, drover.ErrNotFound) {
		t.Fatalf("Get before commit: %v, want not found", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ran, 20*time.Second, "the committed job to run"); got != "committed" {
		t.Fatalf("ran %q, want committed", got)
	}
	waitState(t, c, kept.Job.ID, drover.JobStateCompleted)

	// A refused insert leaves the caller's transaction usable.
	tx, err = pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(t.Context())) //nolint:errcheck // no-op after commit
	if _, err := c.InsertTx(t.Context(), tx, testArgs{Name: "bad"}, &drover.InsertOpts{Priority: 42}); err == nil {
		t.Fatal("InsertTx with priority 42 succeeded")
	}
	if _, err := c.InsertTx(t.Context(), tx, testArgs{Name: "after refusal"}, nil); err != nil {
		t.Fatalf("InsertTx after a refused one: %v", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatalf("commit after a refused InsertTx: %v", err)
	}
	if got := recv(t, ran, 20*time.Second, "the job inserted after a refusal"); got != "after refusal" {
		t.Fatalf("ran %q", got)
	}
}

// TestInsertTxNeedsPostgres: the embedded store has no caller transactions.
func TestInsertTxNeedsPostgres(t *testing.T) {
	t.Parallel()
	c := newClient(t, nil, drover.Config{})
	if _, err := c.InsertTx(t.Context(), nil, testArgs{Name: "x"}, nil); err == nil {
		t.Fatal("InsertTx on the embedded store succeeded")
	}
}

// TestUniqueAcrossNodes races unique inserts of one key from several
// nodes (stores with their own pools): the database lets exactly one in.
func TestUniqueAcrossNodes(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	const nodes, perNode = 4, 8
	clients := make([]*drover.Client, nodes)
	for i := range clients {
		st := openPostgres(t, url, schema, fmt.Sprintf("node-%d", i))
		c, err := drover.NewClient(st, &drover.Config{NoMaintenance: true, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
	}
	for round := range 5 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		created := map[drover.JobID]int{}
		dups := 0
		start := make(chan struct{})
		for _, c := range clients {
			for range perNode {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res, err := c.Insert(t.Context(), testArgs{Name: "u"}, &drover.InsertOpts{Unique: &drover.UniqueOpts{Key: fmt.Sprintf("race-%d", round)}})
					if err != nil {
						t.Errorf("Insert: %v", err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if res.Duplicate {
						dups++
					}
					created[res.Job.ID]++
				}()
			}
		}
		close(start)
		wg.Wait()
		if len(created) != 1 || dups != nodes*perNode-1 {
			t.Fatalf("round %d: %d distinct jobs %v and %d duplicates, want 1 job and %d duplicates", round, len(created), created, dups, nodes*perNode-1)
		}
	}
}

// TestMaintenanceRunsWhereItIsAttached: a process that opens the store
// without running maintenance must not win the election and leave the
// cluster without a promoter. Store a opens first and has no client with
// maintenance; b's client must lead and promote the scheduled job.
func TestMaintenanceRunsWhereItIsAttached(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	a := openPostgres(t, url, schema, "insert-only")
	ca, err := drover.NewClient(a, &drover.Config{NoMaintenance: true, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Give a a chance to campaign, were it (wrongly) to do so.
	time.Sleep(500 * time.Millisecond)
	b := openPostgres(t, url, schema, "maintainer")
	cb, err := drover.NewClient(b, &drover.Config{Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := cb.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 10*time.Second)
		defer cancel()
		cb.Stop(ctx) //nolint:errcheck // the test is over
		ca.Stop(ctx) //nolint:errcheck // the test is over
	})
	res, err := ca.Insert(t.Context(), testArgs{Name: "later"}, &drover.InsertOpts{ScheduleIn: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Job.State != drover.JobStateScheduled {
		t.Fatalf("state %s, want scheduled", res.Job.State)
	}
	waitState(t, ca, res.Job.ID, drover.JobStateAvailable)
}

// BenchmarkPostgresCrossNodeWake measures how soon a worker on one node
// starts a job inserted through another: the NOTIFY path. Inserts are
// spaced 5 ms apart so that the workers are idle and waiting when each
// job arrives. Reports the enqueue-to-start latency.
func BenchmarkPostgresCrossNodeWake(b *testing.B) {
	url := pgtest.TestURL(b)
	schema := pgtest.TestSchema(b, url)
	open := func(node string) *drover.Store {
		st, err := drover.OpenPostgres(b.Context(), url, &drover.PostgresOptions{Schema: schema, NodeID: node, Logger: discard})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	inserter, err := drover.NewClient(open("producer"), &drover.Config{NoMaintenance: true, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	started := make(chan time.Duration, 1024)
	ws := drover.NewWorkers()
	drover.AddWorker(ws, drover.WorkFunc(func(ctx context.Context, j *drover.Job[testArgs]) error {
		sent, _ := time.Parse(time.RFC3339Nano, j.Args.Name)
		started <- time.Since(sent)
		return nil
	}))
	worker, err := drover.NewClient(open("worker"), &drover.Config{Workers: ws, Queues: map[string]drover.QueueConfig{"default": {MaxWorkers: 10}}, Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	if err := worker.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(b.Context()), 10*time.Second)
		defer cancel()
		worker.Stop(ctx) //nolint:errcheck // the benchmark is over
	})
	time.Sleep(200 * time.Millisecond) // let the worker's listener connect
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		if _, err := inserter.Insert(b.Context(), testArgs{Name: time.Now().Format(time.RFC3339Nano)}, nil); err != nil {
			b.Fatal(err)
		}
		select {
		case d := <-started:
			lat = append(lat, d)
		case <-time.After(10 * time.Second):
			b.Fatal("the job never started on the other node")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
