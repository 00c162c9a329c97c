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
// Empty each time a lease try finds nothing (Lease, or Park that parked),
// so a test knows that a waiting lease has made its first try and is
// blocked until something wakes it, and on Parked each time a lease call
// parks. Every call still goes to the real store, which must implement
// store.Parker, as the embedded store does.
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
func (s *LeaseSpy) Park(ctx context.Context, p store.LeaseParams, now func() time.Time) (store.ParkedLease, error) {
	pk, err := s.Store.(store.Parker).Park(ctx, p, now)
	if err != nil {
		return nil, err
	}
	select {
	case <-pk.Done():
	default:
		signal(s.Empty)
		signal(s.Parked)
	}
	return pk, nil
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Lease implements store.Store.
func (s *LeaseSpy) Lease(ctx context.Context, p store.LeaseParams) ([]*job.Job, error) {
	jobs, err := s.Store.Lease(ctx, p)
	if err == nil && len(jobs) == 0 {
		signal(s.Empty)
	}
	return jobs, err
}
