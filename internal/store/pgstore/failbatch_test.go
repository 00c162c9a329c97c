package pgstore_test

import (
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
)

// TestFailuresAreBatched fails 300 leased jobs at once from 300
// goroutines, with stale tokens and repeats mixed in: every call gets its
// own right answer, and the failures share fewer batches than calls.
func TestFailuresAreBatched(t *testing.T) {
	t.Parallel()
	s := open(t)
	now := time.Now()
	const n = 300
	specs := make([]job.Spec, n)
	for i := range specs {
		specs[i] = job.Spec{Kind: "k", Args: json.RawMessage(`{}`), MaxAttempts: 3}
	}
	if _, err := s.Insert(t.Context(), store.InsertParams{Now: now, Jobs: prep(t, now, specs...)}); err != nil {
		t.Fatal(err)
	}
	leased, err := s.Lease(t.Context(), store.LeaseParams{Now: now, Queues: []string{job.DefaultQueue}, Limit: n, LeaseFor: time.Minute, Worker: "w"})
	if err != nil || len(leased) != n {
		t.Fatalf("Lease: %d jobs, %v", len(leased), err)
	}
	before := pgstore.FailBatches(s)
	type call struct {
		j      *job.Job
		token  string
		repeat bool
	}
	var calls []call
	for i, j := range leased {
		switch i % 10 {
		case 0:
			calls = append(calls, call{j: j, token: "stale-token"})
		case 1:
			calls = append(calls, call{j: j, token: j.LeaseToken}, call{j: j, token: j.LeaseToken, repeat: true})
		default:
			calls = append(calls, call{j: j, token: j.LeaseToken})
		}
	}
	type result struct {
		j   *job.Job
		err error
	}
	results := make([]result, len(calls))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			j, err := s.Fail(t.Context(), store.FailParams{Now: now, ID: c.j.ID, LeaseToken: c.token, Message: "boom", RetryAt: now.Add(time.Hour)})
			results[i] = result{j, err}
		}()
	}
	close(start)
	wg.Wait()
	for i, c := range calls {
		r := results[i]
		switch {
		case c.token == "stale-token":
			if job.Code(r.err) != "lease_lost" {
				t.Errorf("job %d, stale token: %v, want lease_lost", c.j.ID, r.err)
			}
		case r.err != nil:
			t.Errorf("job %d (repeat %v): %v", c.j.ID, c.repeat, r.err)
		case r.j.State != job.StateRetryable || len(r.j.Errors) != 1 || r.j.Errors[0].Message != "boom" || r.j.LeaseToken != "":
			t.Errorf("job %d (repeat %v) = %s with %d errors, token %q; want retryable with one error", c.j.ID, c.repeat, r.j.State, len(r.j.Errors), r.j.LeaseToken)
		}
	}
	for _, c := range calls {
		got, err := s.Get(t.Context(), c.j.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := job.StateRetryable
		if c.token == "stale-token" {
			want = job.StateRunning
		}
		if got.State != want || (want == job.StateRetryable && len(got.Errors) != 1) {
			t.Errorf("stored job %d = %s with %d errors, want %s", c.j.ID, got.State, len(got.Errors), want)
		}
	}
	batches := pgstore.FailBatches(s) - before
	if batches >= int64(len(calls)) {
		t.Errorf("%d calls took %d batches: nothing was batched", len(calls), batches)
	}
	t.Logf("%d fail calls settled in %d batches", len(calls), batches)
}
