package storetest

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// BenchArgs is the ~100-byte args object of the benchmark workloads.
var BenchArgs = json.RawMessage(`{"customer_id":123456,"email":"someone@example.com","template":"welcome","locale":"en-GB","n":1}`)

func benchInserts(b testing.TB, n int, now time.Time) []*job.Insert {
	out := make([]*job.Insert, n)
	for i := range out {
		sp := job.Spec{Kind: "bench", Args: BenchArgs}
		in, err := sp.Prepare(now, job.Limits{}, "")
		if err != nil {
			b.Fatal(err)
		}
		out[i] = in
	}
	return out
}

// Bench runs the shared store benchmarks against stores made by f:
// single and batched inserts, concurrent single inserts (group commit),
// and lease+complete.
func Bench(b *testing.B, f Factory) {
	ctx := b.Context()
	b.Run("InsertSingle", func(b *testing.B) {
		s := f(b)
		defer s.Close()
		ins := benchInserts(b, 1, time.Now())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("InsertSingleParallel50", func(b *testing.B) {
		s := f(b)
		defer s.Close()
		ins := benchInserts(b, 1, time.Now())
		b.ReportAllocs()
		b.SetParallelism(25) // 2 cores here: 50 goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("InsertBatch1000", func(b *testing.B) {
		s := f(b)
		defer s.Close()
		ins := benchInserts(b, 1000, time.Now())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "jobs/s")
	})
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("LeaseComplete/batch=%d", batch), func(b *testing.B) {
			s := f(b)
			defer s.Close()
			// Keep enough jobs waiting for every iteration.
			ins := benchInserts(b, 1000, time.Now())
			for range (b.N*batch)/1000 + 2 {
				if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := 0
			for range b.N {
				jobs, err := s.Lease(ctx, store.LeaseParams{Now: time.Now(), Queues: []string{"default"}, Limit: batch, LeaseFor: time.Minute})
				if err != nil {
					b.Fatal(err)
				}
				cs := make([]store.CompleteJob, len(jobs))
				for i, j := range jobs {
					cs[i] = store.CompleteJob{ID: j.ID, LeaseToken: j.LeaseToken}
				}
				if _, err := s.Complete(ctx, store.CompleteParams{Now: time.Now(), Jobs: cs}); err != nil {
					b.Fatal(err)
				}
				done += len(jobs)
			}
			b.ReportMetric(float64(done)/b.Elapsed().Seconds(), "jobs/s")
		})
	}
	// Lease cost must not grow with the number of jobs stored: the same
	// lease+complete with 10 thousand and 1 million jobs waiting in the
	// same queue.
	for _, stored := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("LeaseCompleteStored/stored=%d", stored), func(b *testing.B) {
			s := f(b)
			defer s.Close()
			ins := benchInserts(b, 1000, time.Now())
			// What the loop consumes comes on top, so at least stored jobs
			// wait throughout.
			for range (stored+10*b.N)/1000 + 1 {
				if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			done := 0
			for range b.N {
				jobs, err := s.Lease(ctx, store.LeaseParams{Now: time.Now(), Queues: []string{"default"}, Limit: 10, LeaseFor: time.Minute})
				if err != nil || len(jobs) == 0 {
					b.Fatal("lease:", err, len(jobs))
				}
				cs := make([]store.CompleteJob, len(jobs))
				for i, j := range jobs {
					cs[i] = store.CompleteJob{ID: j.ID, LeaseToken: j.LeaseToken}
				}
				if _, err := s.Complete(ctx, store.CompleteParams{Now: time.Now(), Jobs: cs}); err != nil {
					b.Fatal(err)
				}
				done += len(jobs)
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(done), "µs/job")
		})
	}
	b.Run("LeaseCompleteParallel100", func(b *testing.B) {
		s := f(b)
		defer s.Close()
		ins := benchInserts(b, 1000, time.Now())
		for range b.N/1000 + 2 {
			if _, err := s.Insert(ctx, store.InsertParams{Now: time.Now(), Jobs: ins}); err != nil {
				b.Fatal(err)
			}
		}
		var done atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		var wg sync.WaitGroup
		per := b.N/100 + 1
		for range 100 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					jobs, err := s.Lease(ctx, store.LeaseParams{Now: time.Now(), Queues: []string{"default"}, Limit: 1, LeaseFor: time.Minute})
					if err != nil || len(jobs) == 0 {
						b.Error("lease:", err)
						return
					}
					if _, err := s.Complete(ctx, store.CompleteParams{Now: time.Now(), Jobs: []store.CompleteJob{{ID: jobs[0].ID, LeaseToken: jobs[0].LeaseToken}}}); err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(done.Load())/b.Elapsed().Seconds(), "jobs/s")
	})
}
