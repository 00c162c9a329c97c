package engine

import (
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// BenchmarkPublishIdle is the cost that the event stream adds to settling
// a batch of 100 jobs when nobody subscribes: the hot path's price.
func BenchmarkPublishIdle(b *testing.B) {
	e := &Engine{events: newEvents(0, 0)}
	jobs := make([]*job.Job, 100)
	for i := range jobs {
		jobs[i] = &job.Job{ID: job.ID(i + 1), Kind: "k", Queue: "q", State: job.StateCompleted, Attempt: 1}
	}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		e.publishJobs(EventCompleted, job.StateRunning, now, jobs)
	}
}
