package maintenance

import (
	"context"
	"log/slog"
	"time"

	"github.com/droverhq/drover/internal/engine"
)

// DefaultRescueInterval is how often the rescuer looks for expired leases:
// a job whose worker vanished is re-delivered within about this long after
// its lease ends.
const DefaultRescueInterval = time.Second

// NewLeaseRescuer returns the service that re-delivers jobs whose lease
// expired, counting each expiry as a failed attempt.
func NewLeaseRescuer(e *engine.Engine, interval time.Duration, log *slog.Logger) *Service {
	if interval <= 0 {
		interval = DefaultRescueInterval
	}
	return newService("lease_rescuer", interval, log, func(ctx context.Context) (int, error) {
		return e.Rescue(ctx, 1000)
	})
}
