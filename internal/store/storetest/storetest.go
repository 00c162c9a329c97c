// Package storetest is the executable specification of store.Store: a
// conformance suite that every store runs with Run, and shared benchmarks
// that every store runs with Bench.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Factory opens a fresh, empty store for one test. The suite closes it.
type Factory func(t testing.TB) store.Store

// T0 is the suite's reference time; tests move forward from it.
var T0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// bundle is one test's fresh setup.
type bundle struct {
	t   *testing.T
	s   store.Store
	ctx context.Context
}

func setup(t *testing.T, f Factory) *bundle {
	t.Helper()
	s := f(t)
	t.Cleanup(func() { s.Close() })
	return &bundle{t: t, s: s, ctx: t.Context()}
}

// spec is a helper that builds a valid job.Spec with small args.
func spec(kind string, mods ...func(*job.Spec)) job.Spec {
	sp := job.Spec{Kind: kind, Args: json.RawMessage(`{"n":1}`)}
	for _, m := range mods {
		m(&sp)
	}
	return sp
}

func inQueue(q string) func(*job.Spec) { return func(s *job.Spec) { s.Queue = q } }
func withPriority(p int) func(*job.Spec) {
	return func(s *job.Spec) { s.Priority = p }
}
func withRunAt(t time.Time) func(*job.Spec) { return func(s *job.Spec) { s.RunAt = t } }
func withMaxAttempts(n int) func(*job.Spec) {
	return func(s *job.Spec) { s.MaxAttempts = n }
}
func withUnique(u job.UniqueOpts) func(*job.Spec) {
	return func(s *job.Spec) { s.Unique = &u }
}
func withArgs(a string) func(*job.Spec)       { return func(s *job.Spec) { s.Args = json.RawMessage(a) } }
func withTags(tags ...string) func(*job.Spec) { return func(s *job.Spec) { s.Tags = tags } }
func withDeps(ids ...job.ID) func(*job.Spec)  { return func(s *job.Spec) { s.DependsOn = ids } }

// insertAt inserts specs at now and returns the results.
func (b *bundle) insertAt(now time.Time, specs ...job.Spec) []store.InsertResult {
	b.t.Helper()
	res, err := b.tryInsert(now, specs...)
	if err != nil {
		b.t.Fatalf("Insert: %v", err)
	}
	return res
}

func (b *bundle) tryInsert(now time.Time, specs ...job.Spec) ([]store.InsertResult, error) {
	b.t.Helper()
	ins := make([]*job.Insert, len(specs))
	for i := range specs {
		in, err := specs[i].Prepare(now, job.Limits{}, "")
		if err != nil {
			b.t.Fatalf("Prepare: %v", err)
		}
		ins[i] = in
	}
	return b.s.Insert(b.ctx, store.InsertParams{Now: now, Jobs: ins})
}

// insert inserts specs at T0 and returns the new jobs.
func (b *bundle) insert(specs ...job.Spec) []*job.Job {
	b.t.Helper()
	res := b.insertAt(T0, specs...)
	out := make([]*job.Job, len(res))
	for i, r := range res {
		if r.Duplicate {
			b.t.Fatalf("job %d: unexpected duplicate", i)
		}
		out[i] = r.Job
	}
	return out
}

func (b *bundle) lease(now time.Time, limit int, queues ...string) []*job.Job {
	b.t.Helper()
	if len(queues) == 0 {
		queues = []string{job.DefaultQueue}
	}
	jobs, err := b.s.Lease(b.ctx, store.LeaseParams{Now: now, Queues: queues, Limit: limit, LeaseFor: 30 * time.Second, Worker: "w1"})
	if err != nil {
		b.t.Fatalf("Lease: %v", err)
	}
	return jobs
}

func (b *bundle) leaseOne(now time.Time, queues ...string) *job.Job {
	b.t.Helper()
	jobs := b.lease(now, 1, queues...)
	if len(jobs) != 1 {
		b.t.Fatalf("Lease returned %d jobs, want 1", len(jobs))
	}
	return jobs[0]
}

func (b *bundle) get(id job.ID) *job.Job {
	b.t.Helper()
	j, err := b.s.Get(b.ctx, id)
	if err != nil {
		b.t.Fatalf("Get(%d): %v", id, err)
	}
	return j
}

func (b *bundle) complete(now time.Time, id job.ID, token string, output string) (*job.Job, error) {
	b.t.Helper()
	var out json.RawMessage
	if output != "" {
		out = json.RawMessage(output)
	}
	res, err := b.s.Complete(b.ctx, store.CompleteParams{Now: now, Jobs: []store.CompleteJob{{ID: id, LeaseToken: token, Output: out}}})
	if err != nil {
		b.t.Fatalf("Complete: %v", err)
	}
	if len(res) != 1 {
		b.t.Fatalf("Complete returned %d results, want 1", len(res))
	}
	return res[0].Job, res[0].Err
}

func (b *bundle) counts(queue string) map[job.State]int {
	b.t.Helper()
	qs, err := b.s.Queues(b.ctx)
	if err != nil {
		b.t.Fatalf("Queues: %v", err)
	}
	for _, q := range qs {
		if q.Name == queue {
			return q.Counts
		}
	}
	return map[job.State]int{}
}

func wantState(t *testing.T, j *job.Job, want job.State) {
	t.Helper()
	if j == nil {
		t.Fatalf("job is nil, want state %s", want)
	}
	if j.State != want {
		t.Fatalf("job %d state = %s, want %s", j.ID, j.State, want)
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want errors.Is %v", err, target)
	}
}

func ids(jobs []*job.Job) []job.ID {
	out := make([]job.ID, len(jobs))
	for i, j := range jobs {
		out[i] = j.ID
	}
	return out
}

func sameIDs(a, b []job.ID) bool {
	return fmt.Sprint(a) == fmt.Sprint(b)
}
