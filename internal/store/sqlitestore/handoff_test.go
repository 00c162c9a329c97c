package sqlitestore_test

import (
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"
)

func openHandOff(t *testing.T) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func insertJobs(t *testing.T, s *sqlitestore.Store, specs ...job.Spec) []*job.Job {
	t.Helper()
	now := time.Now()
	ins := make([]*job.Insert, len(specs))
	for i, sp := range specs {
		in, err := sp.Prepare(now, job.Limits{}, "")
		if err != nil {
			t.Fatal(err)
		}
		ins[i] = in
	}
	res, err := s.Insert(t.Context(), store.InsertParams{Now: now, Jobs: ins})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]*job.Job, len(res))
	for i, r := range res {
		out[i] = r.Job
	}
	return out
}

func park(t *testing.T, s *sqlitestore.Store, queue string, limit int) store.ParkedLease {
	t.Helper()
	pk, err := s.Park(t.Context(), store.LeaseParams{Queues: []string{queue}, Limit: limit, LeaseFor: time.Minute, Worker: "w"}, time.Now)
	if err != nil {
		t.Fatalf("park: %v", err)
	}
	return pk
}

func handed(t *testing.T, pk store.ParkedLease) []*job.Job {
	t.Helper()
	select {
	case <-pk.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("no hand-off within 10s")
	}
	jobs, err := pk.Result()
	if err != nil {
		t.Fatalf("hand-off failed: %v", err)
	}
	return jobs
}

func availableIn(t *testing.T, s *sqlitestore.Store, queue string) int {
	t.Helper()
	qs, err := s.Queues(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Name == queue {
			return q.Counts[job.StateAvailable]
		}
	}
	return 0
}

// TestHandOffLeasesInTheInsertCommit: a parked call gets the job inserted
// after it, leased by the insert's own commit.
func TestHandOffLeasesInTheInsertCommit(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	pk := park(t, s, "q", 1)
	before := s.Stats().Commits
	want := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0]
	jobs := handed(t, pk)
	if len(jobs) != 1 || jobs[0].ID != want.ID || jobs[0].State != job.StateRunning || jobs[0].Attempt != 1 || jobs[0].LeaseToken == "" {
		t.Fatalf("handed %+v, want job %d running, attempt 1, with a token", jobs, want.ID)
	}
	if n := s.Stats().Commits - before; n != 1 {
		t.Fatalf("insert and hand-off took %d commits, want 1", n)
	}
	if n := availableIn(t, s, "q"); n != 0 {
		t.Fatalf("%d jobs still available after the hand-off", n)
	}
	// The token is live: the job completes with it.
	res, err := s.Complete(t.Context(), store.CompleteParams{Now: time.Now(), Jobs: []store.CompleteJob{{ID: want.ID, LeaseToken: jobs[0].LeaseToken}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("complete with the handed token: %v, %v", err, res[0].Err)
	}
}

// TestParkTriesFirst: a call parks only when nothing is available; a job
// already waiting is leased by Park itself.
func TestParkTriesFirst(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	want := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0]
	pk := park(t, s, "q", 5)
	select {
	case <-pk.Done():
	default:
		t.Fatal("Park parked although a job was available")
	}
	got, err := pk.Result()
	if err != nil || len(got) != 1 || got[0].ID != want.ID || got[0].State != job.StateRunning {
		t.Fatalf("Park leased %v, %v; want job %d running", got, err, want.ID)
	}
	if again, err := pk.Cancel(); err != nil || len(again) != 1 {
		t.Fatalf("Cancel after Done = %v, %v; want the same job", again, err)
	}
}

// TestHandOffOldestFirstOnePerJob: one job goes to the call that parked
// first; the other call keeps waiting and gets the next job.
func TestHandOffOldestFirstOnePerJob(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	first, second := park(t, s, "q", 1), park(t, s, "q", 1)
	a := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0]
	if got := handed(t, first); len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("first call got %v, want job %d", got, a.ID)
	}
	b := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0]
	if got := handed(t, second); len(got) != 1 || got[0].ID != b.ID {
		t.Fatalf("second call got %v, want job %d", got, b.ID)
	}
}

// TestHandOffFetchOrder: a parked call is leased the best job of the
// write, in fetch order, not merely the first inserted.
func TestHandOffFetchOrder(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	pk := park(t, s, "q", 1)
	ins := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q", Priority: 5}, job.Spec{Kind: "k", Queue: "q", Priority: 1})
	got := handed(t, pk)
	if len(got) != 1 || got[0].ID != ins[1].ID {
		t.Fatalf("handed %v, want the priority-1 job %d", got, ins[1].ID)
	}
	if n := availableIn(t, s, "q"); n != 1 {
		t.Fatalf("%d jobs available, want the other one", n)
	}
}

// TestHandOffLeavesOtherQueuesAndPausedOnes: a call parked on another
// queue, or on a paused one, is not given the job, which stays available.
func TestHandOffLeavesOtherQueuesAndPausedOnes(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	if err := s.SetQueuePaused(t.Context(), store.QueuePauseParams{Now: time.Now(), Queue: "paused", Paused: true}); err != nil {
		t.Fatal(err)
	}
	other, onPaused := park(t, s, "other", 1), park(t, s, "paused", 1)
	insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"}, job.Spec{Kind: "k", Queue: "paused"})
	// Cancel waits for a hand-off in progress, so nothing can arrive
	// after it: these calls got nothing.
	for name, pk := range map[string]store.ParkedLease{"other queue": other, "paused queue": onPaused} {
		if got, err := pk.Cancel(); err != nil || len(got) != 0 {
			t.Fatalf("call parked on the %s got %v, %v", name, got, err)
		}
	}
	if a, p := availableIn(t, s, "q"), availableIn(t, s, "paused"); a != 1 || p != 1 {
		t.Fatalf("available: q %d, paused %d; want 1 and 1", a, p)
	}
}

// TestHandOffCancelLosesNothing races withdrawals against inserts: every
// job ends either handed to exactly one call (Done or Cancel returned it)
// or still available, never both and never neither.
func TestHandOffCancelLosesNothing(t *testing.T) {
	t.Parallel()
	s := openHandOff(t)
	const rounds = 200
	var mu sync.Mutex
	got := map[job.ID]int{}
	inserted := map[job.ID]bool{}
	for range rounds {
		pk := park(t, s, "q", 1)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			j := insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0]
			mu.Lock()
			inserted[j.ID] = true
			mu.Unlock()
		}()
		go func() {
			defer wg.Done()
			jobs, err := pk.Cancel()
			if err != nil {
				t.Errorf("cancel: %v", err)
			}
			mu.Lock()
			for _, j := range jobs {
				got[j.ID]++
			}
			mu.Unlock()
		}()
		wg.Wait()
	}
	left, err := s.Lease(t.Context(), store.LeaseParams{Now: time.Now(), Queues: []string{"q"}, Limit: rounds, LeaseFor: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range left {
		got[j.ID]++
	}
	for id := range inserted {
		if got[id] != 1 {
			t.Errorf("job %d was leased %d times, want exactly once", id, got[id])
		}
	}
	if len(got) != rounds {
		t.Errorf("%d distinct jobs leased, want %d", len(got), rounds)
	}
}

// TestHandOffCancelWhileTaken withdraws a call at the moment the writer
// holds it: its lease has run, and the commit is held inside its fsync.
// Cancel must wait for that commit and return the job leased for the
// call, which would otherwise be leased to nobody until its lease expired.
func TestHandOffCancelWhileTaken(t *testing.T) {
	t.Parallel()
	faults := sqlitevfs.NewFaults()
	s, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{Faults: faults, CheckpointEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pk := park(t, s, "q", 1)
	held, release := make(chan struct{}), make(chan struct{})
	var released sync.Once
	letGo := func() { released.Do(func() { close(release) }) }
	defer letGo() // before Close, which waits for the held commit
	var once sync.Once
	faults.BeforeSync(func(int) {
		once.Do(func() {
			close(held)
			<-release
		})
	})
	inserted := make(chan *job.Job, 1)
	go func() { inserted <- insertJobs(t, s, job.Spec{Kind: "k", Queue: "q"})[0] }()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the insert's commit never reached its fsync")
	}
	cancelled := make(chan []*job.Job, 1)
	go func() {
		jobs, err := pk.Cancel()
		if err != nil {
			t.Errorf("cancel: %v", err)
		}
		cancelled <- jobs
	}()
	// Cancel must not return while the commit is held. This wait cannot
	// fail a correct store; it gives a wrong one time to answer early.
	select {
	case got := <-cancelled:
		t.Fatalf("Cancel returned %v while the writer held the call", got)
	case <-time.After(100 * time.Millisecond):
	}
	letGo()
	want := <-inserted
	got := <-cancelled
	if len(got) != 1 || got[0].ID != want.ID || got[0].State != job.StateRunning {
		t.Fatalf("Cancel during the hand-off returned %v, want job %d leased", got, want.ID)
	}
}
