// Package testenv holds helpers shared by Drover's own tests: a settable
// clock and a store that reports empty leases. Only tests import it.
package testenv

import (
	"context"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// T0 is the time a new Clock starts at.
var T0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Clock is a settable clock for engine.Config.Now. It is safe for
// concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock at T0.
func NewClock() *Clock { return &Clock{now: T0} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// LeaseSpy is a real store with observations added: it signals on
// Empty each time a Lease finds nothing, so a test knows that a waiting
// lease has made its first try and is blocked until something wakes it,
// and on Parked each time a lease call parks (store.Parker). Every call
// still goes to the real store.
type LeaseSpy struct {
	store.Store
	Empty  chan struct{}
	Parked chan struct{}
}

// NewLeaseSpy wraps st, buffering up to n signals of each kind.
func NewLeaseSpy(st store.Store, n int) *LeaseSpy {
	return &LeaseSpy{Store: st, Empty: make(chan struct{}, n), Parked: make(chan struct{}, n)}
}

// Park implements store.Parker by passing the call on to the real store.
// A store that cannot hand jobs off gets a park that never ends, which
// is the same as none: the engine's other wake-ups end the wait.
func (s *LeaseSpy) Park(p store.LeaseParams, now func() time.Time) store.ParkedLease {
	var pk store.ParkedLease = idlePark{}
	if pr, ok := s.Store.(store.Parker); ok {
		pk = pr.Park(p, now)
	}
	select {
	case s.Parked <- struct{}{}:
	default:
	}
	return pk
}

// idlePark is a parked lease that never gets jobs.
type idlePark struct{}

func (idlePark) Done() <-chan struct{}       { return nil }
func (idlePark) Result() ([]*job.Job, error) { return nil, nil }
func (idlePark) Cancel() ([]*job.Job, error) { return nil, nil }

// Lease implements store.Store.
func (s *LeaseSpy) Lease(ctx context.Context, p store.LeaseParams) ([]*job.Job, error) {
	jobs, err := s.Store.Lease(ctx, p)
	if err == nil && len(jobs) == 0 {
		select {
		case s.Empty <- struct{}{}:
		default:
		}
	}
	return jobs, err
}
