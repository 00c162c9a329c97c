package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/droverhq/drover/internal/engine"
)

// DefaultPromoteInterval is how often the promoter looks for due jobs.
const DefaultPromoteInterval = time.Second

// NewPromoter returns the service that makes scheduled and retryable jobs
// available once their time has come, and wakes the workers waiting for
// them.
func NewPromoter(e *engine.Engine, interval time.Duration, log *slog.Logger) *Service {
	if interval <= 0 {
		interval = DefaultPromoteInterval
	}
	return newService("promoter", interval, log, func(ctx context.Context) (int, error) {
		return e.Promote(ctx, 1000)
	})
}
