package pgstore_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

type wakeup struct {
	queue string
	n     int
}

// openNode opens a second store ("node") on an existing schema.
func openNode(t *testing.T, url, schema, node string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 4, NodeID: node})
	if err != nil {
		t.Fatalf("Open %s: %v", node, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// twoNodes opens two stores ("node-a" and "node-b") on one fresh schema.
func twoNodes(t *testing.T) (a, b *pgstore.Store) {
	t.Helper()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	return openNode(t, url, schema, "node-a"), openNode(t, url, schema, "node-b")
}

// insertJobs inserts n jobs of queue q through s, running at at (zero:
// now).
func insertJobs(t *testing.T, s *pgstore.Store, q string, n int, now, at time.Time) []store.InsertResult {
	t.Helper()
	specs := make([]job.Spec, n)
	for i := range specs {
		specs[i] = job.Spec{Kind: "k", Queue: q, Args: json.RawMessage(`{}`), RunAt: at}
	}
	res, err := s.Insert(t.Context(), store.InsertParams{Now: now, Jobs: prep(t, now, specs...)})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// listen runs s.Listen until the test ends and returns its wake-ups.
// The listener is connected once the first probe notification arrives.
func listen(t *testing.T, s *pgstore.Store, probe func()) <-chan wakeup {
	t.Helper()
	ch := make(chan wakeup, 64)
	ctx := t.Context()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Listen(ctx, func(q string, n int) { ch <- wakeup{q, n} })
	}()
	t.Cleanup(func() { <-done })
	// LISTEN is asynchronous to this goroutine: probe until it hears.
	deadline := time.Now().Add(10 * time.Second)
	for {
		probe()
		select {
		case w := <-ch:
			if w.queue == "probe" {
				for len(ch) > 0 {
					<-ch
				}
				return ch
			}
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("listener never heard the probe")
		}
	}
}

func want(t *testing.T, ch <-chan wakeup, queue string, n int) {
	t.Helper()
	select {
	case w := <-ch:
		if w.queue != queue || w.n != n {
			t.Fatalf("wake-up = %+v, want {%s %d}", w, queue, n)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no wake-up for %s", queue)
	}
}

func none(t *testing.T, ch <-chan wakeup, within time.Duration) {
	t.Helper()
	select {
	case w := <-ch:
		t.Fatalf("unexpected wake-up %+v", w)
	case <-time.After(within):
	}
}

func prep(t *testing.T, now time.Time, specs ...job.Spec) []*job.Insert {
	t.Helper()
	out := make([]*job.Insert, len(specs))
	for i := range specs {
		in, err := specs[i].Prepare(now, job.Limits{}, "")
		if err != nil {
			t.Fatal(err)
		}
		out[i] = in
	}
	return out
}

func TestListenWakesOtherNodes(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	now := time.Now()
	args := json.RawMessage(`{}`)
	ins := func(s *pgstore.Store, q string, n int, at time.Time) { insertJobs(t, s, q, n, now, at) }
	ch := listen(t, b, func() { ins(a, "probe", 1, time.Time{}) })

	// Another node's insert wakes b with the count per queue.
	ins(a, "emails", 3, time.Time{})
	want(t, ch, "emails", 3)
	// b's own inserts do not: its engine woke its waiters already.
	ins(b, "emails", 2, time.Time{})
	// A scheduled job is not available: no wake-up either.
	ins(a, "later", 1, now.Add(time.Hour))
	none(t, ch, 300*time.Millisecond)

	// Promotion on a wakes b with the count per queue.
	if _, err := a.Promote(t.Context(), store.PromoteParams{Now: now.Add(2 * time.Hour), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	want(t, ch, "later", 1)

	// Resuming a queue wakes every waiter of it.
	if err := a.SetQueuePaused(t.Context(), store.QueuePauseParams{Now: now, Queue: "emails", Paused: false}); err != nil {
		t.Fatal(err)
	}
	want(t, ch, "emails", -1)

	// A transactional insert on b wakes b itself, and only at commit.
	tx, err := b.Pool().Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.InsertTx(t.Context(), tx, store.InsertParams{Now: now, Jobs: prep(t, now, job.Spec{Kind: "k", Queue: "txq", Args: args})}); err != nil {
		t.Fatal(err)
	}
	none(t, ch, 300*time.Millisecond)
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	want(t, ch, "txq", 1)

	// A completion on b that releases a dependant wakes every node, b too.
	res, err := b.Insert(t.Context(), store.InsertParams{Now: now, Jobs: prep(t, now, job.Spec{Kind: "k", Queue: "dep1", Args: args})})
	if err != nil {
		t.Fatal(err)
	}
	id := res[0].Job.ID
	if _, err := b.Insert(t.Context(), store.InsertParams{Now: now, Jobs: prep(t, now, job.Spec{Kind: "k", Queue: "dep2", Args: args, DependsOn: []job.ID{id}})}); err != nil {
		t.Fatal(err)
	}
	leased, err := b.Lease(t.Context(), store.LeaseParams{Now: now, Queues: []string{"dep1"}, Limit: 1, LeaseFor: time.Minute})
	if err != nil || len(leased) != 1 {
		t.Fatalf("Lease = %v, %v", leased, err)
	}
	if _, err := b.Complete(t.Context(), store.CompleteParams{Now: now, Jobs: []store.CompleteJob{{ID: id, LeaseToken: leased[0].LeaseToken}}}); err != nil {
		t.Fatal(err)
	}
	want(t, ch, "dep2", 1)
}

func TestInsertTxIsVisibleOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	s := open(t)
	now := time.Now()
	args := json.RawMessage(`{"n":1}`)
	for _, commit := range []bool{false, true} {
		tx, err := s.Pool().Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.InsertTx(t.Context(), tx, store.InsertParams{Now: now, Jobs: prep(t, now, job.Spec{Kind: "k", Args: args})})
		if err != nil {
			t.Fatal(err)
		}
		id := res[0].Job.ID
		if _, err := s.Get(t.Context(), id); job.Code(err) != "not_found" {
			t.Fatalf("job %d visible before commit: %v", id, err)
		}
		if commit {
			err = tx.Commit(t.Context())
		} else {
			err = tx.Rollback(t.Context())
		}
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Get(t.Context(), id)
		switch {
		case commit && err != nil:
			t.Fatalf("job %d after commit: %v", id, err)
		case !commit && job.Code(err) != "not_found":
			t.Fatalf("job %d after rollback: %v, want not found", id, err)
		}
	}
	// A refused insert (a missing dependency) leaves the caller's
	// transaction usable: it rolls back to its savepoint.
	tx, err := s.Pool().Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context()) //nolint:errcheck // after Commit it is a no-op
	_, err = s.InsertTx(t.Context(), tx, store.InsertParams{Now: now, Jobs: prep(t, now, job.Spec{Kind: "k", Args: args, DependsOn: []job.ID{1 << 40}})})
	if job.Code(err) != "invalid_argument" {
		t.Fatalf("InsertTx with a missing dependency: %v, want invalid_argument", err)
	}
	var one int
	if err := tx.QueryRow(t.Context(), `SELECT 1`).Scan(&one); err != nil {
		t.Fatalf("transaction unusable after a refused InsertTx: %v", err)
	}
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestListenReconnects kills the listener's connection from the server
// side: the listener reconnects, wakes every waiter once (notifications
// sent meanwhile are lost), and hears later notifications again.
func TestListenReconnects(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	now := time.Now()
	ins := func(q string) { insertJobs(t, a, q, 1, now, time.Time{}) }
	ch := listen(t, b, func() { ins("probe") })
	// The listener's backend is the one session LISTENing on b's channel.
	var killed bool
	err := a.Pool().QueryRow(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN %' AND query LIKE '%' || $1 || '%'`, b.Schema()).Scan(&killed)
	if err != nil || !killed {
		t.Fatalf("terminate the listener's backend: %v, %v", killed, err)
	}
	want(t, ch, "", -1)
	ins("after")
	want(t, ch, "after", 1)
}

// TestResignationHandsOverAtOnce: a leader that resigns announces it, and
// a listening node's elector claims the role at once instead of at its
// next renewal, 20 s away here.
func TestResignationHandsOverAtOnce(t *testing.T) {
	t.Parallel()
	a, b := twoNodes(t)
	elector := func(s *pgstore.Store, id string) *pgstore.Elector {
		el, err := pgstore.NewElector(s, pgstore.ElectorOptions{ID: id, TTL: time.Minute, Renew: 20 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return el
	}
	ea, eb := elector(a, "node-a"), elector(b, "node-b")
	actx, stopA := context.WithCancel(t.Context())
	aDone := make(chan struct{})
	go func() { defer close(aDone); ea.Run(actx) }()
	t.Cleanup(func() { stopA(); <-aDone })
	for deadline := time.Now().Add(10 * time.Second); !ea.IsLeader(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node-a never led")
		}
	}
	// b listens (with its elector kicked on a resignation) and campaigns;
	// its first claim fails, and its next is 20 s away.
	woke := make(chan struct{}, 16)
	bctx, stopB := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = b.ListenAll(bctx, func(string, int) { woke <- struct{}{} }, func(string) { eb.Kick() })
	}()
	go func() { defer wg.Done(); eb.Run(bctx) }()
	t.Cleanup(func() { stopB(); wg.Wait() })
	now := time.Now()
	for connected := false; !connected; {
		insertJobs(t, a, job.DefaultQueue, 1, now, time.Time{})
		select {
		case <-woke:
			connected = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	if eb.IsLeader() {
		t.Fatal("node-b leads while node-a does")
	}
	stopA()
	<-aDone
	for deadline := time.Now().Add(5 * time.Second); !eb.IsLeader(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("node-b did not take over within 5 s of the resignation: it waited for its renewal")
		}
	}
}
