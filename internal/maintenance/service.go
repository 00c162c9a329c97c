// Package maintenance runs Drover's background services: the promoter
// (scheduled and retryable jobs that are due become available), the lease
// rescuer (expired leases are re-delivered) and the pruner (finished jobs
// past their retention are deleted). One file per service; all share the
// lifecycle of Service.
//
// With the embedded store one process owns the data, so its services always
// run. With PostgreSQL every node has them, but each runs its task only
// while its gate (SetGate: the node is the elected leader) is open.
package maintenance

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Service is a background loop that runs a task every interval until it
// is stopped. Start and Stop are safe to call in any order and more than
// once.
type Service struct {
	name     string
	interval time.Duration
	task     func(ctx context.Context) (int, error)
	log      *slog.Logger
	gate     atomic.Pointer[func() bool]

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
}

func newService(name string, interval time.Duration, log *slog.Logger, task func(ctx context.Context) (int, error)) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{name: name, interval: interval, task: task, log: log.With("service", name), kick: make(chan struct{}, 1)}
}

// Name returns the service's name, for logs.
func (s *Service) Name() string { return s.name }

// Start starts the loop; it runs the task at once and then every
// interval. Starting a started service does nothing.
func (s *Service) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cancel != nil {
		return nil
	}
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.done = make(chan struct{})
	go s.loop(ctx, s.done)
	return nil
}

// Stop stops the loop and waits for a running task to return.
func (s *Service) Stop() {
	s.mu.Lock()
	cancel, done := s.cancel, s.done
	s.cancel, s.done = nil, nil
	s.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// SetGate makes the loop run its task only while gate returns true (nil
// removes the gate). A node that becomes leader should Kick its services.
func (s *Service) SetGate(gate func() bool) {
	if gate == nil {
		s.gate.Store(nil)
		return
	}
	s.gate.Store(&gate)
}

// open reports whether the gate lets the task run.
func (s *Service) open() bool {
	g := s.gate.Load()
	return g == nil || (*g)()
}

// Kick asks the loop to run the task now rather than at the next tick.
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Service) loop(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		var n int
		var err error
		if s.open() {
			n, err = s.task(ctx)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Error("maintenance task failed", "err", err)
		case n > 0:
			s.log.Debug("maintenance task done", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
	}
}
