package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// Retention says how long finished jobs are kept. A zero duration keeps
// jobs of that state forever.
type Retention struct {
	Completed time.Duration
	Cancelled time.Duration
	Discarded time.Duration
}

// DefaultRetention keeps completed jobs a day and cancelled and discarded
// ones (which someone may want to inspect or retry) a week.
var DefaultRetention = Retention{
	Completed: 24 * time.Hour,
	Cancelled: 7 * 24 * time.Hour,
	Discarded: 7 * 24 * time.Hour,
}

// DefaultPruneInterval is how often the pruner runs.
const DefaultPruneInterval = time.Minute

// NewPruner returns the service that deletes finished jobs past their
// retention, in batches so that it never holds the store for long.
func NewPruner(e *engine.Engine, r Retention, interval time.Duration, log *slog.Logger) *Service {
	if interval <= 0 {
		interval = DefaultPruneInterval
	}
	return newService("pruner", interval, log, func(ctx context.Context) (int, error) {
		now := e.Now()
		total := 0
		for _, p := range []struct {
			keep  time.Duration
			state job.State
		}{{r.Completed, job.StateCompleted}, {r.Cancelled, job.StateCancelled}, {r.Discarded, job.StateDiscarded}} {
			if p.keep <= 0 {
				continue
			}
			n, err := e.Prune(ctx, now.Add(-p.keep), []job.State{p.state}, 1000)
			total += n
			if err != nil {
				return total, err
			}
		}
		n, err := e.PruneIdempotencyKeys(ctx, 1000)
		return total + n, err
	})
}
