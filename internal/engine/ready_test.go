package engine_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// TestDependencyReleaseWakesWaitingLease checks that a lease call waiting
// on a queue gets a dependant job as soon as the completion of its last
// dependency makes it available, not at the next poll: the poll interval
// here is an hour, longer than the wait, so only the store's ready hook can
// deliver the job.
func TestDependencyReleaseWakesWaitingLease(t *testing.T) {
	t.Parallel()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	eng, err := engine.New(engine.Config{Store: st, PollInterval: time.Hour, MaxWait: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("engine.New: %v", err)
	}
	ctx := t.Context()
	parent, err := eng.Enqueue(ctx, job.Spec{Kind: "parent", Queue: "flow", Args: []byte(`{}`)})
	if err != nil {
		t.Fatalf("enqueue parent: %v", err)
	}
	child, err := eng.Enqueue(ctx, job.Spec{Kind: "child", Queue: "flow", Args: []byte(`{}`), DependsOn: []job.ID{parent[0].Job.ID}})
	if err != nil {
		t.Fatalf("enqueue child: %v", err)
	}
	got, err := eng.Lease(ctx, engine.LeaseRequest{Queues: []string{"flow"}, Max: 10})
	if err != nil || len(got) != 1 || got[0].ID != parent[0].Job.ID {
		t.Fatalf("first lease = %v, %v; want only the parent", got, err)
	}

	type result struct {
		jobs []*job.Job
		err  error
	}
	waiting := make(chan result, 1)
	go func() {
		jobs, err := eng.Lease(ctx, engine.LeaseRequest{Queues: []string{"flow"}, Wait: 45 * time.Second})
		waiting <- result{jobs, err}
	}()
	// Let the second call park before the completion; if it has not
	// parked yet it finds the child at once, which passes too.
	for eng.Waiting() == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := eng.Complete(ctx, got[0].ID, got[0].LeaseToken, nil); err != nil {
		t.Fatalf("complete parent: %v", err)
	}
	r := <-waiting
	if r.err != nil {
		t.Fatalf("waiting lease: %v", r.err)
	}
	if len(r.jobs) != 1 || r.jobs[0].ID != child[0].Job.ID {
		t.Fatalf("waiting lease got %d jobs; want the child %d, released by its parent's completion", len(r.jobs), child[0].Job.ID)
	}
}
