package graphqlapi

import (
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// setComplexity gives the fields that answer lists their cost: the
// number of items they may answer times the cost of one item's
// selection. Other fields cost one plus their selection (gqlgen's
// default).
func setComplexity(c *ComplexityRoot) {
	c.Query.Jobs = func(child int, _ []job.State, _, _ []string, _ *string, first *int, _ *string, _ *ListOrder) int {
		n := 100
		if first != nil && *first > 0 {
			n = min(*first, store.MaxListLimit)
		}
		return 1 + n*child
	}
	// Queues are few, but not bounded by the request: count a hundred.
	c.Query.Queues = func(child int) int { return 1 + 100*child }
	c.Mutation.EnqueueBatch = func(child int, input []*EnqueueInput) int {
		return 1 + max(len(input), 1)*child
	}
	c.Mutation.LeaseJobs = func(child int, input LeaseInput) int {
		return 1 + max(deref(input.Max), 1)*child
	}
	// A job's error history is bounded by its attempts: count 25.
	c.Job.ErrorHistory = func(child int) int { return 1 + 25*child }
}
