// Package maintenance runs Drover's background services: the promoter
// (scheduled and retryable jobs that are due become available), the lease
// rescuer (expired leases are re-delivered) and the pruner (finished jobs
// past their retention are deleted). One file per service; all share the
// lifecycle of Service.
//
// With the embedded store one process owns the data, so its services always
// run. With a shared store only the cluster's leader will run them (leader
// election comes with the PostgreSQL store, issue #4).
package maintenance

import (
	"context"
	"log/slog"
	"sync"
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
		n, err := s.task(ctx)
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
