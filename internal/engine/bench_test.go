package engine_test

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"testing"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// BenchmarkSettle measures the engine's hot path over the embedded store
// (without fsync, so that the engine's own cost is not hidden behind the
// disk): each round enqueues a batch, leases it and completes it in one
// call. Compare runs with benchstat; absolute figures depend on the
// machine.
func BenchmarkSettle(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			eng := benchEngine(b, 0)
			benchSettle(b, eng, size)
		})
	}
}

// BenchmarkSettleSubscribed is BenchmarkSettle with one event subscriber
// that reads every event: what publishing costs when someone listens.
func BenchmarkSettleSubscribed(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run("batch="+strconv.Itoa(size), func(b *testing.B) {
			// A buffer that a reader on a busy machine cannot fill: the
			// benchmark measures publishing, not dropping.
			eng := benchEngine(b, 1<<16)
			sub, err := eng.Subscribe(engine.EventFilter{})
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				for {
					if _, err := sub.Next(b.Context()); err != nil {
						return
					}
				}
			}()
			benchSettle(b, eng, size)
			sub.Close()
			<-done
			if !errors.Is(sub.Err(), engine.ErrSubscriptionClosed) {
				b.Fatalf("the subscriber was dropped: %v", sub.Err())
			}
		})
	}
}

func benchEngine(b *testing.B, eventBuffer int) *engine.Engine {
	b.Helper()
	st, err := sqlitestore.Open(b.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	eng, err := engine.New(engine.Config{Store: st, Logger: slog.New(slog.DiscardHandler), EventBuffer: eventBuffer})
	if err != nil {
		b.Fatal(err)
	}
	return eng
}

func benchSettle(b *testing.B, eng *engine.Engine, size int) {
	b.Helper()
	ctx := b.Context()
	sp := specs(size, job.Spec{Kind: "bench", Args: json.RawMessage(`{"n":1}`)})
	cs := make([]engine.Completion, 0, size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := eng.Enqueue(ctx, sp...); err != nil {
			b.Fatal(err)
		}
		jobs, err := eng.Lease(ctx, engine.LeaseRequest{Queues: []string{job.DefaultQueue}, Max: size})
		if err != nil || len(jobs) != size {
			b.Fatalf("lease: %d jobs, %v", len(jobs), err)
		}
		cs = cs[:0]
		for _, j := range jobs {
			cs = append(cs, engine.Completion{ID: j.ID, LeaseToken: j.LeaseToken})
		}
		res, err := eng.CompleteMany(ctx, cs)
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range res {
			if r.Err != nil {
				b.Fatal(r.Err)
			}
		}
	}
	b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "jobs/s")
}
