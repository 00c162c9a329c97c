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

// LeaseSpy is a real store with one observation added: it signals on
// Empty each time a Lease finds nothing, so a test knows that a waiting
// lease has made its first try and is blocked until something wakes it.
// Every call still goes to the real store.
type LeaseSpy struct {
	store.Store
	Empty chan struct{}
}

// NewLeaseSpy wraps st, buffering up to n signals.
func NewLeaseSpy(st store.Store, n int) *LeaseSpy {
	return &LeaseSpy{Store: st, Empty: make(chan struct{}, n)}
}

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
