package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Run runs the conformance suite against stores made by f. Every test gets
// a fresh store and runs in parallel with the others.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b *bundle)
	}{
		{"InsertReturnsStoredJob", testInsertReturnsStoredJob},
		{"InsertManyIsAtomic", testInsertManyIsAtomic},
		{"InsertScheduledThenPromote", testInsertScheduledThenPromote},
		{"IDsIncrease", testIDsIncrease},
		{"LeaseFetchOrder", testLeaseFetchOrder},
		{"LeaseAcrossQueuesInFetchOrder", testLeaseAcrossQueues},
		{"LeaseSetsLease", testLeaseSetsLease},
		{"LeaseSkipsPausedQueue", testLeaseSkipsPausedQueue},
		{"LeaseConcurrentNoDoubleLease", testLeaseConcurrent},
		{"HeartbeatExtendsLease", testHeartbeat},
		{"CompleteAndIdempotentRepeat", testComplete},
		{"CompleteRepeatAfterLeaseEnd", testCompleteRepeatLate},
		{"CompleteManyMixedResults", testCompleteMany},
		{"StaleTokenRefusedAfterRelease", testStaleToken},
		{"FailRetryableWithBackoff", testFailRetryable},
		{"FailExhaustedDiscards", testFailExhausted},
		{"FailDiscardAndCancelFlags", testFailFlags},
		{"FailIdempotentRepeat", testFailIdempotent},
		{"FreeTextIsKeptSafely", testFreeText},
		{"Snooze", testSnooze},
		{"Cancel", testCancel},
		{"Retry", testRetry},
		{"Delete", testDelete},
		{"GetNotFound", testGetNotFound},
		{"ListFiltersAndPaginates", testList},
		{"RescueExpiredLease", testRescue},
		{"RescueLastAttemptDiscards", testRescueDiscards},
		{"Prune", testPrune},
		{"QueuesCountsAndPause", testQueues},
		{"UniqueKeyDuplicate", testUniqueDuplicate},
		{"UniqueByArgs", testUniqueByArgs},
		{"UniqueByPeriodHeldByCompleted", testUniquePeriod},
		{"UniqueRacingInserts", testUniqueRacing},
		{"DependenciesWaitForCompletion", testDependencies},
		{"DependencyMustExist", testDependencyMustExist},
		{"CallerGivingUpHarmsNoOne", testCallerGivesUp},
		{"Tokens", testTokens},
		{"IdempotentInsert", testIdempotentInsert},
		{"TimeoutBoundsTheAttempt", testTimeoutBoundsAttempt},
		{"CreatedByKeptAndFiltered", testCreatedBy},
		{"ClosedStoreUnavailable", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, setup(t, f))
		})
	}
}

func testInsertReturnsStoredJob(t *testing.T, b *bundle) {
	j := b.insert(spec("email.send", withArgs(`{ "to" : "a@b.c" }`), withTags("x", "y"),
		func(s *job.Spec) { s.Metadata = json.RawMessage(`{"k":"v"}`); s.Timeout = 3 * time.Second }))[0]
	if j.ID <= 0 {
		t.Fatalf("ID = %d, want > 0", j.ID)
	}
	wantState(t, j, job.StateAvailable)
	if j.Queue != job.DefaultQueue || j.Priority != job.DefaultPriority || j.MaxAttempts != job.DefaultMaxAttempts {
		t.Fatalf("defaults not applied: queue %q priority %d max_attempts %d", j.Queue, j.Priority, j.MaxAttempts)
	}
	got := b.get(j.ID)
	if string(got.Args) != `{"to":"a@b.c"}` {
		t.Fatalf("Args = %s, want compacted JSON", got.Args)
	}
	if got.Kind != "email.send" || got.Attempt != 0 || got.Timeout != 3*time.Second ||
		!slices.Equal(got.Tags, []string{"x", "y"}) || string(got.Metadata) != `{"k":"v"}` {
		t.Fatalf("stored job differs: %+v", got)
	}
	if !got.CreatedAt.Equal(T0) || !got.ScheduledAt.Equal(T0) {
		t.Fatalf("times: created %v scheduled %v, want %v", got.CreatedAt, got.ScheduledAt, T0)
	}
	if got.LeaseToken != "" || got.AttemptedAt != nil || got.FinalizedAt != nil {
		t.Fatalf("fresh job has lease or attempt data: %+v", got)
	}
	if c := b.counts(job.DefaultQueue); c[job.StateAvailable] != 1 {
		t.Fatalf("available count = %d, want 1", c[job.StateAvailable])
	}
}

func testInsertManyIsAtomic(t *testing.T, b *bundle) {
	ok := b.insert(spec("a"), spec("b"))
	if len(ok) != 2 || ok[0].ID >= ok[1].ID {
		t.Fatalf("batch insert ids %v, want two increasing", ids(ok))
	}
	_, err := b.tryInsert(T0, spec("c"), spec("d", withDeps(999999)))
	wantErr(t, err, job.ErrInvalid)
	list, err := b.s.List(b.ctx, store.ListParams{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Jobs) != 2 {
		t.Fatalf("after a failed batch, %d jobs stored, want 2 (none of the failed batch)", len(list.Jobs))
	}
	if c := b.counts(job.DefaultQueue); c[job.StateAvailable] != 2 {
		t.Fatalf("available count = %d, want 2", c[job.StateAvailable])
	}
}

func testInsertScheduledThenPromote(t *testing.T, b *bundle) {
	j := b.insert(spec("later", withRunAt(T0.Add(time.Minute))))[0]
	wantState(t, j, job.StateScheduled)
	if got := b.lease(T0.Add(2*time.Minute), 10); len(got) != 0 {
		t.Fatalf("leased a scheduled job before promotion: %v", ids(got))
	}
	n, err := b.s.Promote(b.ctx, store.PromoteParams{Now: T0.Add(30 * time.Second), Limit: 100})
	if err != nil || len(n) != 0 {
		t.Fatalf("early Promote = %v, %v; want nothing", n, err)
	}
	n, err = b.s.Promote(b.ctx, store.PromoteParams{Now: T0.Add(time.Minute), Limit: 100})
	if err != nil || n[job.DefaultQueue] != 1 {
		t.Fatalf("Promote = %v, %v; want 1 in default", n, err)
	}
	wantState(t, b.get(j.ID), job.StateAvailable)
	if got := b.leaseOne(T0.Add(time.Minute)); got.ID != j.ID {
		t.Fatalf("leased %d, want %d", got.ID, j.ID)
	}
}

func testIDsIncrease(t *testing.T, b *bundle) {
	var last job.ID
	for i := range 20 {
		j := b.insert(spec(fmt.Sprintf("k%d", i)))[0]
		if j.ID <= last {
			t.Fatalf("id %d after %d", j.ID, last)
		}
		last = j.ID
	}
}

func testLeaseFetchOrder(t *testing.T, b *bundle) {
	// Inserted out of order: the lease must follow priority, then
	// scheduled_at, then id.
	late := b.insertAt(T0, spec("p5-late", withRunAt(T0.Add(-time.Second))))[0].Job
	p9 := b.insert(spec("p9", withPriority(9)))[0]
	early := b.insertAt(T0, spec("p5-early", withRunAt(T0.Add(-time.Minute))))[0].Job
	p1a := b.insert(spec("p1a", withPriority(1)))[0]
	p1b := b.insert(spec("p1b", withPriority(1)))[0]
	p5now := b.insert(spec("p5-now"))[0]
	want := []job.ID{p1a.ID, p1b.ID, early.ID, late.ID, p5now.ID, p9.ID}
	var got []job.ID
	for range want {
		got = append(got, b.leaseOne(T0).ID)
	}
	if !sameIDs(got, want) {
		t.Fatalf("lease order %v, want %v", got, want)
	}
	b.insert(spec("x", withPriority(3)), spec("y", withPriority(2)), spec("z", withPriority(3)))
	batch := b.lease(T0, 10)
	kinds := []string{}
	for _, j := range batch {
		kinds = append(kinds, j.Kind)
	}
	if !slices.Equal(kinds, []string{"y", "x", "z"}) {
		t.Fatalf("one lease returned kinds %v, want [y x z]", kinds)
	}
}

func testLeaseAcrossQueues(t *testing.T, b *bundle) {
	a1 := b.insert(spec("a1", inQueue("a"), withPriority(4)))[0]
	b1 := b.insert(spec("b1", inQueue("b"), withPriority(2)))[0]
	b.insert(spec("c1", inQueue("c"), withPriority(1)))
	a2 := b.insert(spec("a2", inQueue("a"), withPriority(2)))[0]
	got := b.lease(T0, 2, "a", "b")
	if !sameIDs(ids(got), []job.ID{b1.ID, a2.ID}) {
		t.Fatalf("leased %v, want %v", ids(got), []job.ID{b1.ID, a2.ID})
	}
	got = b.lease(T0, 5, "a", "b", "a")
	if !sameIDs(ids(got), []job.ID{a1.ID}) {
		t.Fatalf("leased %v, want only %d (queue c not asked)", ids(got), a1.ID)
	}
}

func testLeaseSetsLease(t *testing.T, b *bundle) {
	j := b.insert(spec("k"))[0]
	now := T0.Add(time.Second)
	l := b.leaseOne(now)
	if l.ID != j.ID || l.State != job.StateRunning || l.Attempt != 1 {
		t.Fatalf("leased %+v", l)
	}
	if len(l.LeaseToken) < 16 {
		t.Fatalf("lease token %q is too short to be unguessable", l.LeaseToken)
	}
	if l.LeaseExpiresAt == nil || !l.LeaseExpiresAt.Equal(now.Add(30*time.Second)) {
		t.Fatalf("lease expires %v, want %v", l.LeaseExpiresAt, now.Add(30*time.Second))
	}
	if l.AttemptedAt == nil || !l.AttemptedAt.Equal(now) || l.AttemptedBy != "w1" {
		t.Fatalf("attempted_at %v by %q", l.AttemptedAt, l.AttemptedBy)
	}
	if string(l.Args) != `{"n":1}` {
		t.Fatalf("leased args %s", l.Args)
	}
	if g := b.get(j.ID); g.LeaseToken != "" || g.State != job.StateRunning {
		t.Fatalf("Get exposes lease token %q or wrong state %s", g.LeaseToken, g.State)
	}
	if got := b.lease(now, 10); len(got) != 0 {
		t.Fatalf("leased a running job again: %v", ids(got))
	}
	c := b.counts(job.DefaultQueue)
	if c[job.StateRunning] != 1 || c[job.StateAvailable] != 0 {
		t.Fatalf("counts %v, want 1 running", c)
	}
}

func testLeaseSkipsPausedQueue(t *testing.T, b *bundle) {
	b.insert(spec("k", inQueue("q")))
	if err := b.s.SetQueuePaused(b.ctx, store.QueuePauseParams{Now: T0, Queue: "q", Paused: true}); err != nil {
		t.Fatal(err)
	}
	if got := b.lease(T0, 10, "q"); len(got) != 0 {
		t.Fatalf("leased %v from a paused queue", ids(got))
	}
	if err := b.s.SetQueuePaused(b.ctx, store.QueuePauseParams{Now: T0, Queue: "q", Paused: false}); err != nil {
		t.Fatal(err)
	}
	if got := b.lease(T0, 10, "q"); len(got) != 1 {
		t.Fatalf("after resume leased %d, want 1", len(got))
	}
}

func testLeaseConcurrent(t *testing.T, b *bundle) {
	const n = 600
	specs := make([]job.Spec, n)
	for i := range specs {
		specs[i] = spec("k")
	}
	b.insert(specs...)
	var (
		mu   sync.Mutex
		seen = map[job.ID]int{}
		wg   sync.WaitGroup
		errs = make(chan error, 16)
	)
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				jobs, err := b.s.Lease(b.ctx, store.LeaseParams{Now: T0, Queues: []string{"default"}, Limit: 1 + w%5, LeaseFor: time.Minute, Worker: fmt.Sprint(w)})
				if err != nil {
					errs <- err
					return
				}
				if len(jobs) == 0 {
					return
				}
				mu.Lock()
				for _, j := range jobs {
					seen[j.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("leased %d distinct jobs, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("job %d leased %d times while its lease lived", id, c)
		}
	}
}

func testHeartbeat(t *testing.T, b *bundle) {
	b.insert(spec("k"))
	l := b.leaseOne(T0)
	now := T0.Add(20 * time.Second)
	j, err := b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: now, ID: l.ID, LeaseToken: l.LeaseToken, LeaseFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !j.LeaseExpiresAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("expiry %v, want %v", j.LeaseExpiresAt, now.Add(time.Minute))
	}
	// The extended lease protects the job from the rescuer.
	rescued, err := b.s.Rescue(b.ctx, store.RescueParams{Now: T0.Add(45 * time.Second), Limit: 10})
	if err != nil || len(rescued) != 0 {
		t.Fatalf("Rescue = %v, %v; want nothing rescued", ids(rescued), err)
	}
	_, err = b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: now, ID: l.ID, LeaseToken: "not-the-token", LeaseFor: time.Minute})
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: now, ID: 424242, LeaseToken: l.LeaseToken, LeaseFor: time.Minute})
	wantErr(t, err, job.ErrNotFound)
	if g := b.get(l.ID); !g.LeaseExpiresAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("a refused heartbeat changed the expiry to %v", g.LeaseExpiresAt)
	}
}

func testComplete(t *testing.T, b *bundle) {
	b.insert(spec("k"))
	l := b.leaseOne(T0)
	done := T0.Add(time.Second)
	j, err := b.complete(done, l.ID, l.LeaseToken, `{"ok": true}`)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateCompleted)
	if j.ID != l.ID || j.Kind != "k" || j.Queue != job.DefaultQueue || j.Attempt != 1 ||
		j.FinalizedAt == nil || !j.FinalizedAt.Equal(done) || string(j.Output) != `{"ok": true}` {
		t.Fatalf("Complete returned %+v", j)
	}
	if g := b.get(l.ID); g.State != job.StateCompleted || !g.FinalizedAt.Equal(done) ||
		string(g.Output) != `{"ok": true}` || g.LeaseExpiresAt != nil || string(g.Args) != `{"n":1}` {
		t.Fatalf("stored completed job %+v", g)
	}
	again, err := b.complete(done.Add(time.Second), l.ID, l.LeaseToken, `{"other":1}`)
	if err != nil {
		t.Fatalf("repeating a complete with its token: %v", err)
	}
	if !again.FinalizedAt.Equal(done) || string(again.Output) != `{"ok": true}` {
		t.Fatalf("a repeated complete changed the job: %+v", again)
	}
	_, err = b.complete(done, l.ID, "wrong", "")
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.complete(done, 987654, "x", "")
	wantErr(t, err, job.ErrNotFound)
	c := b.counts(job.DefaultQueue)
	if c[job.StateCompleted] != 1 || c[job.StateRunning] != 0 {
		t.Fatalf("counts %v, want 1 completed", c)
	}
}

func testCompleteMany(t *testing.T, b *bundle) {
	b.insert(spec("a"), spec("b"), spec("c"))
	ls := b.lease(T0, 3)
	res, err := b.s.Complete(b.ctx, store.CompleteParams{Now: T0, Jobs: []store.CompleteJob{
		{ID: ls[0].ID, LeaseToken: ls[0].LeaseToken},
		{ID: ls[1].ID, LeaseToken: "stale"},
		{ID: ls[2].ID, LeaseToken: ls[2].LeaseToken},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Err != nil || res[2].Err != nil {
		t.Fatalf("results %v %v, want success", res[0].Err, res[2].Err)
	}
	wantErr(t, res[1].Err, job.ErrLeaseLost)
	wantState(t, b.get(ls[0].ID), job.StateCompleted)
	wantState(t, b.get(ls[1].ID), job.StateRunning)
	wantState(t, b.get(ls[2].ID), job.StateCompleted)
}

func testStaleToken(t *testing.T, b *bundle) {
	b.insert(spec("k", withMaxAttempts(5)))
	first := b.leaseOne(T0)
	// The lease expires and is rescued; a second worker leases the job.
	if _, err := b.s.Rescue(b.ctx, store.RescueParams{Now: T0.Add(time.Minute), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	second := b.leaseOne(T0.Add(time.Minute))
	if second.ID != first.ID || second.LeaseToken == first.LeaseToken || second.Attempt != 2 {
		t.Fatalf("re-lease: id %d token same=%v attempt %d", second.ID, second.LeaseToken == first.LeaseToken, second.Attempt)
	}
	now := T0.Add(61 * time.Second)
	_, err := b.complete(now, first.ID, first.LeaseToken, "")
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.s.Fail(b.ctx, store.FailParams{Now: now, ID: first.ID, LeaseToken: first.LeaseToken, Message: "late"})
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.s.Snooze(b.ctx, store.SnoozeParams{Now: now, ID: first.ID, LeaseToken: first.LeaseToken, Delay: time.Second})
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: now, ID: first.ID, LeaseToken: first.LeaseToken, LeaseFor: time.Second})
	wantErr(t, err, job.ErrLeaseLost)
	g := b.get(first.ID)
	if g.State != job.StateRunning || g.Attempt != 2 || len(g.Errors) != 1 || !g.LeaseExpiresAt.Equal(second.LeaseExpiresAt.UTC()) {
		t.Fatalf("stale settles changed the job: %+v", g)
	}
	if _, err := b.complete(now, second.ID, second.LeaseToken, ""); err != nil {
		t.Fatalf("live token refused: %v", err)
	}
}

func testFailRetryable(t *testing.T, b *bundle) {
	b.insert(spec("k", withMaxAttempts(3)))
	l := b.leaseOne(T0)
	var seen *job.Job
	j, err := b.s.Fail(b.ctx, store.FailParams{Now: T0.Add(time.Second), ID: l.ID, LeaseToken: l.LeaseToken,
		Message: "boom", Detail: "stack", Backoff: func(j *job.Job) time.Duration { seen = j; return time.Minute }})
	if err != nil {
		t.Fatal(err)
	}
	if seen == nil || seen.Attempt != 1 || seen.Kind != "k" {
		t.Fatalf("backoff saw %+v, want the running job at attempt 1", seen)
	}
	wantState(t, j, job.StateRetryable)
	if !j.ScheduledAt.Equal(T0.Add(time.Second + time.Minute)) {
		t.Fatalf("scheduled_at %v, want now + backoff", j.ScheduledAt)
	}
	if len(j.Errors) != 1 || j.Errors[0].Attempt != 1 || j.Errors[0].Message != "boom" ||
		j.Errors[0].Detail != "stack" || !j.Errors[0].At.Equal(T0.Add(time.Second)) {
		t.Fatalf("errors %+v", j.Errors)
	}
	if j.FinalizedAt != nil || j.LeaseExpiresAt != nil {
		t.Fatalf("retryable job finalized or still leased: %+v", j)
	}
	// An explicit retry time wins; a time not after now makes it available.
	n, err := b.s.Promote(b.ctx, store.PromoteParams{Now: T0.Add(2 * time.Minute), Limit: 10})
	if err != nil || n[job.DefaultQueue] != 1 {
		t.Fatalf("Promote = %v, %v", n, err)
	}
	l2 := b.leaseOne(T0.Add(2 * time.Minute))
	j, err = b.s.Fail(b.ctx, store.FailParams{Now: T0.Add(3 * time.Minute), ID: l2.ID, LeaseToken: l2.LeaseToken,
		Message: "again", RetryAt: T0.Add(3 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateAvailable)
	if len(j.Errors) != 2 || j.Errors[1].Attempt != 2 {
		t.Fatalf("errors %+v", j.Errors)
	}
}

func testFailExhausted(t *testing.T, b *bundle) {
	b.insert(spec("k", withMaxAttempts(1)))
	l := b.leaseOne(T0)
	j, err := b.s.Fail(b.ctx, store.FailParams{Now: T0, ID: l.ID, LeaseToken: l.LeaseToken, Message: "last"})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateDiscarded)
	if j.FinalizedAt == nil {
		t.Fatal("discarded job has no finalized_at")
	}
	if c := b.counts(job.DefaultQueue); c[job.StateDiscarded] != 1 || c[job.StateRunning] != 0 {
		t.Fatalf("counts %v", c)
	}
}

func testFailFlags(t *testing.T, b *bundle) {
	b.insert(spec("a"), spec("b"))
	ls := b.lease(T0, 2)
	j, err := b.s.Fail(b.ctx, store.FailParams{Now: T0, ID: ls[0].ID, LeaseToken: ls[0].LeaseToken, Message: "bad input", Discard: true})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateDiscarded)
	j, err = b.s.Fail(b.ctx, store.FailParams{Now: T0, ID: ls[1].ID, LeaseToken: ls[1].LeaseToken, Message: "not wanted", Cancel: true})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateCancelled)
	if len(j.Errors) != 1 || j.FinalizedAt == nil {
		t.Fatalf("cancelled by worker: %+v", j)
	}
}

// testCompleteRepeatLate repeats completes whose first answer was lost
// long after their lease would have ended and after the rescuer ran, as
// a worker retrying with backoff does: one alone (with output) and two
// together (without, the batched path). Each repeat returns the first
// result, and nothing is completed twice.
func testCompleteRepeatLate(t *testing.T, b *bundle) {
	b.insert(spec("k"), spec("k"), spec("k"))
	leased := b.lease(T0, 3)
	if len(leased) != 3 {
		t.Fatalf("leased %d jobs, want 3", len(leased))
	}
	done := T0.Add(time.Second)
	first, err := b.complete(done, leased[0].ID, leased[0].LeaseToken, `{"n":1}`)
	if err != nil {
		t.Fatal(err)
	}
	pair := []store.CompleteJob{{ID: leased[1].ID, LeaseToken: leased[1].LeaseToken}, {ID: leased[2].ID, LeaseToken: leased[2].LeaseToken}}
	res, err := b.s.Complete(b.ctx, store.CompleteParams{Now: done, Jobs: pair})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("Complete of two: %+v, %v", res, err)
	}

	late := T0.Add(2 * time.Hour) // far past the 30s leases
	if rescued, err := b.s.Rescue(b.ctx, store.RescueParams{Now: late, Limit: 10}); err != nil || len(rescued) != 0 {
		t.Fatalf("Rescue = %v, %v; want nothing: completed jobs hold no lease", ids(rescued), err)
	}
	again, err := b.complete(late, leased[0].ID, leased[0].LeaseToken, `{"n":1}`)
	if err != nil {
		t.Fatalf("a late repeat of a complete with its token: %v", err)
	}
	if again.State != job.StateCompleted || again.Attempt != 1 || !again.FinalizedAt.Equal(*first.FinalizedAt) || string(again.Output) != `{"n":1}` {
		t.Fatalf("a late repeat returned %+v, want the first result %+v", again, first)
	}
	res, err = b.s.Complete(b.ctx, store.CompleteParams{Now: late, Jobs: pair})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.Err != nil || r.Job.State != job.StateCompleted || !r.Job.FinalizedAt.Equal(done) {
			t.Fatalf("a late repeat of the pair, job %d: %+v, %v; want completed at %v", i, r.Job, r.Err, done)
		}
	}
	for _, l := range leased {
		if g := b.get(l.ID); g.State != job.StateCompleted || g.Attempt != 1 || len(g.Errors) != 0 || !g.FinalizedAt.Equal(done) {
			t.Fatalf("job %d after the late repeats: %+v", l.ID, g)
		}
	}
	if c := b.counts(job.DefaultQueue); c[job.StateCompleted] != 3 || c[job.StateRunning] != 0 {
		t.Fatalf("counts %v, want 3 completed", c)
	}
}

func testFailIdempotent(t *testing.T, b *bundle) {
	b.insert(spec("k"))
	l := b.leaseOne(T0)
	p := store.FailParams{Now: T0, ID: l.ID, LeaseToken: l.LeaseToken, Message: "x", RetryAt: T0.Add(time.Hour)}
	first, err := b.s.Fail(b.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	p.Now = T0.Add(time.Second)
	again, err := b.s.Fail(b.ctx, p)
	if err != nil {
		t.Fatalf("repeating a fail with its token: %v", err)
	}
	if len(again.Errors) != 1 || !again.ScheduledAt.Equal(first.ScheduledAt) {
		t.Fatalf("a repeated fail changed the job: %+v", again)
	}
	_, err = b.complete(T0, l.ID, l.LeaseToken, "")
	wantErr(t, err, job.ErrLeaseLost)
}

// testFreeText stores free text a worker or an operator may well send:
// NUL bytes (PostgreSQL's text and jsonb refuse them) and invalid UTF-8,
// in a failure's message and detail, a worker name and a token name.
// Every store keeps it, as valid UTF-8 without NUL.
func testFreeText(t *testing.T, b *bundle) {
	b.insert(spec("k"))
	jobs, err := b.s.Lease(b.ctx, store.LeaseParams{Now: T0, Queues: []string{job.DefaultQueue}, Limit: 1, LeaseFor: time.Minute, Worker: "w\x00\xff1"})
	if err != nil || len(jobs) != 1 {
		t.Fatalf("Lease with an odd worker name: %v, %v", jobs, err)
	}
	l := jobs[0]
	j, err := b.s.Fail(b.ctx, store.FailParams{Now: T0, ID: l.ID, LeaseToken: l.LeaseToken,
		Message: "boom\x00after", Detail: "stack\xff\x00", RetryAt: T0.Add(time.Hour)})
	if err != nil {
		t.Fatalf("Fail with NUL and invalid UTF-8: %v", err)
	}
	got := b.get(j.ID)
	if len(got.Errors) != 1 {
		t.Fatalf("errors = %+v", got.Errors)
	}
	e := got.Errors[0]
	for _, s := range []string{e.Message, e.Detail, got.AttemptedBy} {
		if strings.ContainsRune(s, 0) || !utf8.ValidString(s) {
			t.Fatalf("stored text %q has NUL or invalid UTF-8", s)
		}
	}
	if !strings.HasPrefix(e.Message, "boom") || !strings.HasSuffix(e.Message, "after") {
		t.Fatalf("message = %q, want boom...after", e.Message)
	}
	tok, err := b.s.CreateToken(b.ctx, store.CreateTokenParams{Now: T0, Name: "ci\x00\xfe", Scope: "read", Hash: "h"})
	if err != nil {
		t.Fatalf("CreateToken with an odd name: %v", err)
	}
	stored, err := b.s.GetToken(b.ctx, tok.ID)
	if err != nil || stored.Name != tok.Name || strings.ContainsRune(stored.Name, 0) || !utf8.ValidString(stored.Name) {
		t.Fatalf("token name stored %q, returned %q: %v", stored.Name, tok.Name, err)
	}
}

func testSnooze(t *testing.T, b *bundle) {
	b.insert(spec("k"))
	l := b.leaseOne(T0)
	j, err := b.s.Snooze(b.ctx, store.SnoozeParams{Now: T0, ID: l.ID, LeaseToken: l.LeaseToken, Delay: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateScheduled)
	if j.Attempt != 0 || !j.ScheduledAt.Equal(T0.Add(time.Minute)) || len(j.Errors) != 0 {
		t.Fatalf("snoozed job %+v: want attempt 0, scheduled in a minute, no error", j)
	}
	if _, err := b.s.Promote(b.ctx, store.PromoteParams{Now: T0.Add(time.Minute), Limit: 10}); err != nil {
		t.Fatal(err)
	}
	if l2 := b.leaseOne(T0.Add(time.Minute)); l2.Attempt != 1 {
		t.Fatalf("after snooze attempt = %d, want 1", l2.Attempt)
	}
}

func testCancel(t *testing.T, b *bundle) {
	js := b.insert(spec("a"), spec("b"), spec("c"))
	j, err := b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: js[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateCancelled)
	if j.FinalizedAt == nil {
		t.Fatal("cancelled job has no finalized_at")
	}
	if again, err := b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: js[0].ID}); err != nil || again.State != job.StateCancelled {
		t.Fatalf("cancel twice: %v, %v", again, err)
	}
	// Cancelling a running job revokes its lease.
	l := b.leaseOne(T0)
	if _, err := b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: l.ID}); err != nil {
		t.Fatal(err)
	}
	_, err = b.complete(T0, l.ID, l.LeaseToken, "")
	wantErr(t, err, job.ErrLeaseLost)
	wantState(t, b.get(l.ID), job.StateCancelled)
	// A completed job cannot be cancelled.
	l = b.leaseOne(T0)
	if _, err := b.complete(T0, l.ID, l.LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	_, err = b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: l.ID})
	wantErr(t, err, job.ErrInvalidState)
	_, err = b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: 999999})
	wantErr(t, err, job.ErrNotFound)
}

func testRetry(t *testing.T, b *bundle) {
	b.insert(spec("k", withMaxAttempts(1)))
	l := b.leaseOne(T0)
	_, err := b.s.Retry(b.ctx, store.RetryParams{Now: T0, ID: l.ID})
	wantErr(t, err, job.ErrInvalidState)
	if _, err := b.s.Fail(b.ctx, store.FailParams{Now: T0, ID: l.ID, LeaseToken: l.LeaseToken, Message: "x"}); err != nil {
		t.Fatal(err)
	}
	later := T0.Add(time.Hour)
	j, err := b.s.Retry(b.ctx, store.RetryParams{Now: later, ID: l.ID})
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, j, job.StateAvailable)
	if j.MaxAttempts != 2 || j.FinalizedAt != nil || !j.ScheduledAt.Equal(later) || len(j.Errors) != 1 {
		t.Fatalf("retried job %+v: want one more attempt, not finalized, scheduled now, history kept", j)
	}
	if l2 := b.leaseOne(later); l2.Attempt != 2 {
		t.Fatalf("attempt %d, want 2", l2.Attempt)
	}
	_, err = b.s.Retry(b.ctx, store.RetryParams{Now: T0, ID: 999999})
	wantErr(t, err, job.ErrNotFound)
}

func testDelete(t *testing.T, b *bundle) {
	js := b.insert(spec("a"), spec("b"))
	if err := b.s.Delete(b.ctx, store.DeleteParams{ID: js[1].ID}); err != nil {
		t.Fatal(err)
	}
	_, err := b.s.Get(b.ctx, js[1].ID)
	wantErr(t, err, job.ErrNotFound)
	l := b.leaseOne(T0)
	wantErr(t, b.s.Delete(b.ctx, store.DeleteParams{ID: l.ID}), job.ErrInvalidState)
	wantErr(t, b.s.Delete(b.ctx, store.DeleteParams{ID: js[1].ID}), job.ErrNotFound)
	if c := b.counts(job.DefaultQueue); c[job.StateAvailable] != 0 || c[job.StateRunning] != 1 {
		t.Fatalf("counts %v", c)
	}
}

func testGetNotFound(t *testing.T, b *bundle) {
	_, err := b.s.Get(b.ctx, 123456)
	wantErr(t, err, job.ErrNotFound)
}

func testList(t *testing.T, b *bundle) {
	var all []job.ID
	for i := range 7 {
		q := "q1"
		if i%2 == 1 {
			q = "q2"
		}
		tags := []string{"t" + fmt.Sprint(i%3)}
		all = append(all, b.insert(spec(fmt.Sprintf("kind%d", i%2), inQueue(q), withTags(tags...)))[0].ID)
	}
	l := b.leaseOne(T0, "q1")
	// Ascending pages of 3.
	var got []job.ID
	var after job.ID
	pages := 0
	for {
		res, err := b.s.List(b.ctx, store.ListParams{Limit: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, ids(res.Jobs)...)
		if res.Next == 0 {
			break
		}
		after = res.Next
	}
	if !sameIDs(got, all) || pages != 3 {
		t.Fatalf("paged ids %v in %d pages, want %v in 3", got, pages, all)
	}
	res, err := b.s.List(b.ctx, store.ListParams{Desc: true, Limit: 2})
	if err != nil || !sameIDs(ids(res.Jobs), []job.ID{all[6], all[5]}) || res.Next != all[5] {
		t.Fatalf("desc page %v next %d, %v", ids(res.Jobs), res.Next, err)
	}
	res, err = b.s.List(b.ctx, store.ListParams{Desc: true, Limit: 2, After: res.Next})
	if err != nil || !sameIDs(ids(res.Jobs), []job.ID{all[4], all[3]}) {
		t.Fatalf("second desc page %v, %v", ids(res.Jobs), err)
	}
	cases := []struct {
		name string
		p    store.ListParams
		want []job.ID
	}{
		{"state", store.ListParams{States: []job.State{job.StateRunning}}, []job.ID{l.ID}},
		{"queue", store.ListParams{Queues: []string{"q2"}}, []job.ID{all[1], all[3], all[5]}},
		{"kind", store.ListParams{Kinds: []string{"kind0"}, Queues: []string{"q1"}}, []job.ID{all[0], all[2], all[4], all[6]}},
		{"tag", store.ListParams{Tag: "t1"}, []job.ID{all[1], all[4]}},
		{"states", store.ListParams{States: []job.State{job.StateAvailable, job.StateRunning}, Tag: "t0"}, []job.ID{all[0], all[3], all[6]}},
		{"none", store.ListParams{States: []job.State{job.StateDiscarded}}, nil},
	}
	for _, c := range cases {
		res, err := b.s.List(b.ctx, c.p)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !sameIDs(ids(res.Jobs), c.want) && (len(c.want) != 0 || len(res.Jobs) != 0) {
			t.Fatalf("%s: got %v, want %v", c.name, ids(res.Jobs), c.want)
		}
		if res.Next != 0 {
			t.Fatalf("%s: next %d on the only page", c.name, res.Next)
		}
	}
}

func testRescue(t *testing.T, b *bundle) {
	b.insert(spec("k"), spec("k2"))
	ls := b.lease(T0, 2)
	// Only the first lease is allowed to expire.
	if _, err := b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: T0, ID: ls[1].ID, LeaseToken: ls[1].LeaseToken, LeaseFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if r, err := b.s.Rescue(b.ctx, store.RescueParams{Now: T0.Add(30 * time.Second), Limit: 10}); err != nil || len(r) != 0 {
		t.Fatalf("rescued %v at the expiry instant, %v", ids(r), err)
	}
	now := T0.Add(31 * time.Second)
	r, err := b.s.Rescue(b.ctx, store.RescueParams{Now: now, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(r) != 1 || r[0].ID != ls[0].ID {
		t.Fatalf("rescued %v, want [%d]", ids(r), ls[0].ID)
	}
	j := b.get(ls[0].ID)
	wantState(t, j, job.StateAvailable)
	if len(j.Errors) != 1 || j.Errors[0].Attempt != 1 || j.Errors[0].Message != store.LeaseExpiredMessage || j.LeaseExpiresAt != nil {
		t.Fatalf("rescued job %+v", j)
	}
	if l := b.leaseOne(now); l.ID != ls[0].ID || l.Attempt != 2 {
		t.Fatalf("re-delivery: %d attempt %d", l.ID, l.Attempt)
	}
}

func testRescueDiscards(t *testing.T, b *bundle) {
	b.insert(spec("k", withMaxAttempts(1)))
	l := b.leaseOne(T0)
	r, err := b.s.Rescue(b.ctx, store.RescueParams{Now: T0.Add(time.Hour), Limit: 10})
	if err != nil || len(r) != 1 {
		t.Fatalf("Rescue = %v, %v", ids(r), err)
	}
	wantState(t, r[0], job.StateDiscarded)
	wantState(t, b.get(l.ID), job.StateDiscarded)
}

func testPrune(t *testing.T, b *bundle) {
	js := b.insert(spec("a"), spec("b"), spec("c"))
	l := b.leaseOne(T0)
	if _, err := b.complete(T0, l.ID, l.LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := b.s.Cancel(b.ctx, store.CancelParams{Now: T0.Add(time.Hour), ID: js[1].ID}); err != nil {
		t.Fatal(err)
	}
	n, err := b.s.Prune(b.ctx, store.PruneParams{Before: T0.Add(time.Minute), States: []job.State{job.StateCancelled, job.StateAvailable}, Limit: 100})
	if err != nil || n != 0 {
		t.Fatalf("Prune of cancelled only = %d, %v; want 0 (the cancelled job is too new)", n, err)
	}
	n, err = b.s.Prune(b.ctx, store.PruneParams{Before: T0.Add(time.Minute), Limit: 100})
	if err != nil || n != 1 {
		t.Fatalf("Prune = %d, %v; want 1", n, err)
	}
	_, err = b.s.Get(b.ctx, l.ID)
	wantErr(t, err, job.ErrNotFound)
	wantState(t, b.get(js[1].ID), job.StateCancelled)
	wantState(t, b.get(js[2].ID), job.StateAvailable)
	if c := b.counts(job.DefaultQueue); c[job.StateCompleted] != 0 || c[job.StateCancelled] != 1 || c[job.StateAvailable] != 1 {
		t.Fatalf("counts %v", c)
	}
	n, err = b.s.Prune(b.ctx, store.PruneParams{Before: T0.Add(2 * time.Hour), States: []job.State{job.StateCompleted}, Limit: 100})
	if err != nil || n != 0 {
		t.Fatalf("Prune of completed only = %d, %v; want 0", n, err)
	}
	n, err = b.s.Prune(b.ctx, store.PruneParams{Before: T0.Add(2 * time.Hour), States: []job.State{job.StateCancelled}, Limit: 100})
	if err != nil || n != 1 {
		t.Fatalf("Prune of cancelled = %d, %v; want 1", n, err)
	}
}

func testQueues(t *testing.T, b *bundle) {
	b.insert(spec("a", inQueue("alpha")), spec("b", inQueue("alpha")), spec("c", inQueue("beta"), withRunAt(T0.Add(time.Hour))))
	b.leaseOne(T0, "alpha")
	if err := b.s.SetQueuePaused(b.ctx, store.QueuePauseParams{Now: T0, Queue: "gamma", Paused: true}); err != nil {
		t.Fatal(err)
	}
	if err := b.s.SetQueuePaused(b.ctx, store.QueuePauseParams{Now: T0, Queue: "bad queue!", Paused: true}); !errors.Is(err, job.ErrInvalid) {
		t.Fatalf("pausing an invalid queue name: %v", err)
	}
	qs, err := b.s.Queues(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]store.QueueInfo{}
	var names []string
	for _, q := range qs {
		got[q.Name] = q
		names = append(names, q.Name)
	}
	if !slices.Equal(names, []string{"alpha", "beta", "gamma"}) {
		t.Fatalf("queues %v", names)
	}
	if a := got["alpha"]; a.Paused || a.Counts[job.StateAvailable] != 1 || a.Counts[job.StateRunning] != 1 {
		t.Fatalf("alpha %+v", a)
	}
	if g := got["gamma"]; !g.Paused {
		t.Fatalf("gamma %+v", g)
	}
	if bq := got["beta"]; bq.Counts[job.StateScheduled] != 1 {
		t.Fatalf("beta %+v", bq)
	}
}

func testUniqueDuplicate(t *testing.T, b *bundle) {
	u := withUnique(job.UniqueOpts{Key: "order-42"})
	first := b.insert(spec("k", u))[0]
	res := b.insertAt(T0.Add(time.Second), spec("k", u, withArgs(`{"different":true}`)))
	if !res[0].Duplicate || res[0].Job.ID != first.ID {
		t.Fatalf("second insert: duplicate=%v id %d, want the first (%d)", res[0].Duplicate, res[0].Job.ID, first.ID)
	}
	// Another kind with the same key is not a duplicate.
	if r := b.insertAt(T0, spec("other", u)); r[0].Duplicate {
		t.Fatal("same key on another kind was a duplicate")
	}
	// In one batch: the second is a duplicate of the first.
	batch := b.insertAt(T0, spec("k2", withUnique(job.UniqueOpts{Key: "z"})), spec("k2", withUnique(job.UniqueOpts{Key: "z"})))
	if batch[0].Duplicate || !batch[1].Duplicate || batch[1].Job.ID != batch[0].Job.ID {
		t.Fatalf("batch duplicates: %+v %+v", batch[0], batch[1])
	}
	// Once the first completes, the key is free again.
	l := b.leaseOne(T0)
	if l.ID != first.ID {
		t.Fatalf("leased %d", l.ID)
	}
	if _, err := b.complete(T0, l.ID, l.LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	if r := b.insertAt(T0, spec("k", u)); r[0].Duplicate {
		t.Fatal("key still held after completion")
	}
}

func testUniqueByArgs(t *testing.T, b *bundle) {
	u := withUnique(job.UniqueOpts{ByArgs: true})
	b.insert(spec("k", u, withArgs(`{"a":1,"b":2}`)))
	if r := b.insertAt(T0, spec("k", u, withArgs(`{"b":2, "a":1}`))); !r[0].Duplicate {
		t.Fatal("same args in another key order were not a duplicate")
	}
	if r := b.insertAt(T0, spec("k", u, withArgs(`{"a":1,"b":3}`))); r[0].Duplicate {
		t.Fatal("different args were a duplicate")
	}
	// Cancelling releases the key.
	first := b.insertAt(T0, spec("k2", u))[0].Job
	if _, err := b.s.Cancel(b.ctx, store.CancelParams{Now: T0, ID: first.ID}); err != nil {
		t.Fatal(err)
	}
	if r := b.insertAt(T0, spec("k2", u)); r[0].Duplicate {
		t.Fatal("a cancelled job still held its key")
	}
}

func testUniquePeriod(t *testing.T, b *bundle) {
	u := withUnique(job.UniqueOpts{Period: time.Hour})
	first := b.insert(spec("hourly", u))[0]
	l := b.leaseOne(T0)
	if _, err := b.complete(T0, l.ID, l.LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	r := b.insertAt(T0.Add(30*time.Minute), spec("hourly", u))
	if !r[0].Duplicate || r[0].Job.ID != first.ID {
		t.Fatalf("within the period: duplicate=%v", r[0].Duplicate)
	}
	if r := b.insertAt(T0.Add(61*time.Minute), spec("hourly", u)); r[0].Duplicate {
		t.Fatal("next period was a duplicate")
	}
}

func testUniqueRacing(t *testing.T, b *bundle) {
	const racers = 16
	var wg sync.WaitGroup
	results := make(chan store.InsertResult, racers)
	errs := make(chan error, racers)
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp := spec("race", withUnique(job.UniqueOpts{Key: "one"}))
			in, _ := sp.Prepare(T0, job.Limits{}, "")
			res, err := b.s.Insert(b.ctx, store.InsertParams{Now: T0, Jobs: []*job.Insert{in}})
			if err != nil {
				errs <- err
				return
			}
			results <- res[0]
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	fresh := 0
	var id job.ID
	for r := range results {
		if !r.Duplicate {
			fresh++
		}
		if id == 0 {
			id = r.Job.ID
		} else if r.Job.ID != id {
			t.Fatalf("racing inserts saw jobs %d and %d", id, r.Job.ID)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d racing inserts created a job, want exactly 1", fresh)
	}
	if c := b.counts(job.DefaultQueue); c[job.StateAvailable] != 1 {
		t.Fatalf("counts %v", c)
	}
}

func testDependencies(t *testing.T, b *bundle) {
	deps := b.insert(spec("a"), spec("b"))
	child := b.insert(spec("c", withDeps(deps[0].ID, deps[1].ID), withPriority(1)))[0]
	wantState(t, child, job.StatePending)
	ls := b.lease(T0, 10)
	if len(ls) != 2 {
		t.Fatalf("leased %v, want only the two dependencies", ids(ls))
	}
	if _, err := b.complete(T0, ls[0].ID, ls[0].LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	wantState(t, b.get(child.ID), job.StatePending)
	if _, err := b.complete(T0, ls[1].ID, ls[1].LeaseToken, ""); err != nil {
		t.Fatal(err)
	}
	wantState(t, b.get(child.ID), job.StateAvailable)
	if c := b.counts(job.DefaultQueue); c[job.StatePending] != 0 || c[job.StateAvailable] != 1 {
		t.Fatalf("counts %v", c)
	}
	// A dependency that is already complete is met at insert.
	done := b.insert(spec("d", withDeps(ls[0].ID)))[0]
	wantState(t, done, job.StateAvailable)
}

func testDependencyMustExist(t *testing.T, b *bundle) {
	_, err := b.tryInsert(T0, spec("c", withDeps(777777)))
	wantErr(t, err, job.ErrInvalid)
	var ve *job.ValidationError
	if !errors.As(err, &ve) || ve.Field != "depends_on[0]" {
		t.Fatalf("error %v, want a ValidationError on depends_on[0]", err)
	}
}

func testClosed(t *testing.T, b *bundle) {
	j := b.insert(spec("k"))[0]
	if err := b.s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := b.tryInsert(T0, spec("k"))
	wantErr(t, err, job.ErrUnavailable)
	_, err = b.s.Get(b.ctx, j.ID)
	wantErr(t, err, job.ErrUnavailable)
	_, err = b.s.Lease(b.ctx, store.LeaseParams{Now: T0, Queues: []string{"default"}, Limit: 1, LeaseFor: time.Second})
	wantErr(t, err, job.ErrUnavailable)
	wantErr(t, b.s.Ping(b.ctx), job.ErrUnavailable)
}

// testCallerGivesUp cancels callers at random moments while their requests
// run: a caller that gives up may or may not see its request done, but it
// must never break the store for the next caller. (An earlier sqlitestore
// let the driver interrupt a statement of the shared transaction.)
func testCallerGivesUp(t *testing.T, b *bundle) {
	specs := make([]job.Spec, 1000)
	for i := range specs {
		specs[i] = spec("k")
	}
	for range 10 {
		b.insert(specs...)
	}
	for i := range 60 {
		ctx, cancel := context.WithTimeout(b.ctx, time.Duration(i%15)*100*time.Microsecond)
		b.s.Lease(ctx, store.LeaseParams{Now: T0, Queues: []string{job.DefaultQueue}, Limit: 150, LeaseFor: time.Minute}) //nolint:errcheck // either outcome is fine
		cancel()
		if _, err := b.tryInsert(T0, spec("after")); err != nil {
			t.Fatalf("after a caller gave up (round %d), the next insert failed: %v", i, err)
		}
	}
	if err := b.s.Ping(b.ctx); err != nil {
		t.Fatalf("Ping after cancelled callers: %v", err)
	}
}

func testTokens(t *testing.T, b *bundle) {
	if ts, err := b.s.ListTokens(b.ctx); err != nil || len(ts) != 0 {
		t.Fatalf("fresh store lists tokens %v, %v", ts, err)
	}
	a, err := b.s.CreateToken(b.ctx, store.CreateTokenParams{Now: T0, Name: "ci", Scope: "producer", Hash: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.s.CreateToken(b.ctx, store.CreateTokenParams{Now: T0, Name: "ops", Scope: "admin", Hash: "h2"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID <= 0 || c.ID <= a.ID || a.Name != "ci" || a.Scope != "producer" || a.Hash != "h1" || !a.CreatedAt.Equal(T0) {
		t.Fatalf("created %+v and %+v", a, c)
	}
	got, err := b.s.GetToken(b.ctx, a.ID)
	if err != nil || got.Hash != "h1" || got.RevokedAt != nil {
		t.Fatalf("GetToken = %+v, %v", got, err)
	}
	if err := b.s.RevokeToken(b.ctx, store.RevokeTokenParams{Now: T0.Add(time.Hour), ID: a.ID}); err != nil {
		t.Fatal(err)
	}
	if err := b.s.RevokeToken(b.ctx, store.RevokeTokenParams{Now: T0.Add(2 * time.Hour), ID: a.ID}); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	got, err = b.s.GetToken(b.ctx, a.ID)
	if err != nil || got.RevokedAt == nil || !got.RevokedAt.Equal(T0.Add(time.Hour)) {
		t.Fatalf("revoked token %+v, %v (the first revocation time must stay)", got, err)
	}
	ts, err := b.s.ListTokens(b.ctx)
	if err != nil || len(ts) != 2 || ts[0].ID != a.ID || ts[1].ID != c.ID || ts[1].RevokedAt != nil {
		t.Fatalf("ListTokens = %+v, %v", ts, err)
	}
	_, err = b.s.GetToken(b.ctx, 9999)
	wantErr(t, err, job.ErrNotFound)
	wantErr(t, b.s.RevokeToken(b.ctx, store.RevokeTokenParams{Now: T0, ID: 9999}), job.ErrNotFound)
}

func testIdempotentInsert(t *testing.T, b *bundle) {
	prep := func(kind string) []*job.Insert {
		sp := spec(kind)
		in, err := sp.Prepare(T0, job.Limits{}, "")
		if err != nil {
			t.Fatal(err)
		}
		return []*job.Insert{in}
	}
	renders := 0
	render := func(res []store.InsertResult) (store.StoredResponse, error) {
		renders++
		return store.StoredResponse{Status: 201, Body: []byte(fmt.Sprintf(`{"id":%d}`, res[0].Job.ID))}, nil
	}
	p := store.IdempotentInsertParams{InsertParams: store.InsertParams{Now: T0, Jobs: prep("k")},
		Key: "order-1", RequestHash: "h1", Since: T0.Add(-24 * time.Hour), Render: render}
	first, err := b.s.InsertIdempotent(b.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if first.Replayed || len(first.Results) != 1 || first.Response.Status != 201 || renders != 1 {
		t.Fatalf("first call: %+v, renders %d", first, renders)
	}
	p.Now = T0.Add(time.Hour)
	p.Since = p.Now.Add(-24 * time.Hour)
	again, err := b.s.InsertIdempotent(b.ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Replayed || again.Results != nil || string(again.Response.Body) != string(first.Response.Body) || renders != 1 {
		t.Fatalf("repeat: %+v, renders %d", again, renders)
	}
	if c := b.counts(job.DefaultQueue); c[job.StateAvailable] != 1 {
		t.Fatalf("a repeated key inserted again: counts %v", c)
	}
	other := p
	other.RequestHash = "h2"
	_, err = b.s.InsertIdempotent(b.ctx, other)
	wantErr(t, err, job.ErrIdempotencyMismatch)
	// After the window the key is free; a failed insert stores no key.
	bad := p
	bad.Key = "order-2"
	bad.Jobs = prep("d")
	bad.Jobs[0].DependsOn = []job.ID{999999}
	if _, err := b.s.InsertIdempotent(b.ctx, bad); !errors.Is(err, job.ErrInvalid) {
		t.Fatalf("insert with a missing dependency: %v", err)
	}
	bad.Jobs = prep("d")
	if r, err := b.s.InsertIdempotent(b.ctx, bad); err != nil || r.Replayed {
		t.Fatalf("the key of a failed insert was kept: %+v, %v", r, err)
	}
	late := p
	late.Now = T0.Add(25 * time.Hour)
	late.Since = late.Now.Add(-24 * time.Hour)
	late.RequestHash = "h3"
	if r, err := b.s.InsertIdempotent(b.ctx, late); err != nil || r.Replayed {
		t.Fatalf("an expired key was not free: %+v, %v", r, err)
	}
	n, err := b.s.PruneIdempotencyKeys(b.ctx, T0.Add(2*time.Hour), 100)
	if err != nil || n != 1 {
		t.Fatalf("PruneIdempotencyKeys = %d, %v; want 1 (order-2)", n, err)
	}
}

func testTimeoutBoundsAttempt(t *testing.T, b *bundle) {
	b.insert(spec("slow", func(s *job.Spec) { s.Timeout = 10 * time.Second; s.MaxAttempts = 3 }))
	l := b.leaseOne(T0) // asks for 30 s
	if !l.LeaseExpiresAt.Equal(T0.Add(10 * time.Second)) {
		t.Fatalf("lease expires %v, want at the timeout %v", l.LeaseExpiresAt, T0.Add(10*time.Second))
	}
	j, err := b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: T0.Add(5 * time.Second), ID: l.ID, LeaseToken: l.LeaseToken, LeaseFor: time.Minute})
	if err != nil || !j.LeaseExpiresAt.Equal(T0.Add(10*time.Second)) {
		t.Fatalf("heartbeat extended past the timeout: %v, %v", j, err)
	}
	_, err = b.s.Heartbeat(b.ctx, store.HeartbeatParams{Now: T0.Add(11 * time.Second), ID: l.ID, LeaseToken: l.LeaseToken, LeaseFor: time.Minute})
	wantErr(t, err, job.ErrLeaseLost)
	_, err = b.complete(T0.Add(11*time.Second), l.ID, l.LeaseToken, "")
	wantErr(t, err, job.ErrLeaseLost)
	r, err := b.s.Rescue(b.ctx, store.RescueParams{Now: T0.Add(11 * time.Second), Limit: 10})
	if err != nil || len(r) != 1 {
		t.Fatalf("Rescue = %v, %v", ids(r), err)
	}
	wantState(t, r[0], job.StateRetryable)
	if len(r[0].Errors) != 1 || r[0].Errors[0].Message != store.TimedOutMessage(10*time.Second) || !r[0].ScheduledAt.After(T0.Add(11*time.Second)) {
		t.Fatalf("timed-out job %+v", r[0])
	}
	// A job without a timeout keeps the lease it asked for.
	b.insert(spec("quick"))
	if l := b.leaseOne(T0, job.DefaultQueue); !l.LeaseExpiresAt.Equal(T0.Add(30 * time.Second)) {
		t.Fatalf("lease without a timeout expires %v", l.LeaseExpiresAt)
	}
}

func testCreatedBy(t *testing.T, b *bundle) {
	mine := b.insert(spec("a", func(s *job.Spec) { s.CreatedBy = "token:7" }), spec("b", func(s *job.Spec) { s.CreatedBy = "token:7" }))
	b.insert(spec("c", func(s *job.Spec) { s.CreatedBy = "token:8" }), spec("d"))
	if mine[0].CreatedBy != "token:7" || b.get(mine[1].ID).CreatedBy != "token:7" {
		t.Fatalf("created_by not kept: %q, %q", mine[0].CreatedBy, b.get(mine[1].ID).CreatedBy)
	}
	res, err := b.s.List(b.ctx, store.ListParams{CreatedBy: "token:7", Limit: 10})
	if err != nil || !sameIDs(ids(res.Jobs), ids(mine)) {
		t.Fatalf("List by created_by: %v, %v; want %v", ids(res.Jobs), err, ids(mine))
	}
}
