package engine_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// next reads one event, failing the test after a generous deadline.
func next(t *testing.T, s *engine.Subscription) engine.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func subscribe(t *testing.T, e *engine.Engine, f engine.EventFilter) *engine.Subscription {
	t.Helper()
	s, err := e.Subscribe(f)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// wantEvent checks the fields of an event that a test can predict.
func wantEvent(t *testing.T, got engine.Event, typ engine.EventType, id job.ID, from, to job.State) {
	t.Helper()
	if got.Type != typ || got.JobID != id || got.From != from || got.To != to || got.Count != 1 {
		t.Fatalf("event = %+v; want %s of job %d, %q → %q, count 1", got, typ, id, from, to)
	}
}

// TestEventsForEveryStateChange walks one job through every change the
// engine makes and checks the event of each, in order.
func TestEventsForEveryStateChange(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	s := subscribe(t, b.eng, engine.EventFilter{})
	q := []string{job.DefaultQueue}

	j := b.enqueue(t, job.Spec{Kind: "k", MaxAttempts: 3})[0]
	ev := next(t, s)
	wantEvent(t, ev, engine.EventInserted, j.ID, "", job.StateAvailable)
	if ev.Kind != "k" || ev.Queue != job.DefaultQueue || !ev.At.Equal(b.eng.Now()) {
		t.Fatalf("inserted event = %+v; want kind k, queue default, at the engine's now", ev)
	}

	l := b.lease(t, engine.LeaseRequest{Queues: q})[0]
	ev = next(t, s)
	wantEvent(t, ev, engine.EventLeased, j.ID, job.StateAvailable, job.StateRunning)
	if ev.Attempt != 1 {
		t.Fatalf("leased event attempt = %d, want 1", ev.Attempt)
	}

	retryIn := time.Minute
	if _, err := b.eng.Fail(t.Context(), engine.Failure{ID: j.ID, LeaseToken: l.LeaseToken, Message: "boom", RetryIn: &retryIn}); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventFailed, j.ID, job.StateRunning, job.StateRetryable)

	b.clock.Advance(time.Minute)
	if n, err := b.eng.Promote(t.Context(), 10); err != nil || n != 1 {
		t.Fatalf("Promote = %d, %v; want 1", n, err)
	}
	ev = next(t, s)
	if ev.Type != engine.EventPromoted || ev.JobID != 0 || ev.Queue != job.DefaultQueue || ev.To != job.StateAvailable || ev.Count != 1 {
		t.Fatalf("promoted event = %+v; want one job of queue default made available", ev)
	}

	l = b.lease(t, engine.LeaseRequest{Queues: q})[0]
	wantEvent(t, next(t, s), engine.EventLeased, j.ID, job.StateAvailable, job.StateRunning)
	if _, err := b.eng.Snooze(t.Context(), j.ID, l.LeaseToken, time.Hour); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventSnoozed, j.ID, job.StateRunning, job.StateScheduled)

	if _, err := b.eng.Retry(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventRetried, j.ID, "", job.StateAvailable)

	b.lease(t, engine.LeaseRequest{Queues: q, LeaseFor: time.Second})
	wantEvent(t, next(t, s), engine.EventLeased, j.ID, job.StateAvailable, job.StateRunning)
	b.clock.Advance(2 * time.Second)
	if n, err := b.eng.Rescue(t.Context(), 10); err != nil || n != 1 {
		t.Fatalf("Rescue = %d, %v; want 1", n, err)
	}
	wantEvent(t, next(t, s), engine.EventRescued, j.ID, job.StateRunning, job.StateAvailable)

	l = b.lease(t, engine.LeaseRequest{Queues: q})[0]
	wantEvent(t, next(t, s), engine.EventLeased, j.ID, job.StateAvailable, job.StateRunning)
	if _, err := b.eng.Complete(t.Context(), j.ID, l.LeaseToken, nil); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventCompleted, j.ID, job.StateRunning, job.StateCompleted)

	if err := b.eng.Delete(t.Context(), j.ID); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventDeleted, j.ID, job.StateCompleted, "")

	c := b.enqueue(t, job.Spec{Kind: "k"})[0]
	wantEvent(t, next(t, s), engine.EventInserted, c.ID, "", job.StateAvailable)
	if _, err := b.eng.Cancel(t.Context(), c.ID); err != nil {
		t.Fatal(err)
	}
	wantEvent(t, next(t, s), engine.EventCancelled, c.ID, "", job.StateCancelled)

	// Refused changes publish nothing: the stale token changes no job.
	if _, err := b.eng.Complete(t.Context(), j.ID, l.LeaseToken, nil); err == nil {
		t.Fatal("Complete of a deleted job succeeded")
	}
	// A duplicate inserts nothing and publishes nothing either.
	u := job.Spec{Kind: "u", Unique: &job.UniqueOpts{Key: "one"}}
	first := b.enqueue(t, u)[0]
	wantEvent(t, next(t, s), engine.EventInserted, first.ID, "", job.StateAvailable)
	b.enqueue(t, u)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if ev, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after a refused complete and a duplicate: event %+v, err %v; want none", ev, err)
	}
}

func TestEventsFilter(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	byQueue := subscribe(t, b.eng, engine.EventFilter{Queues: []string{"q2"}})
	byKind := subscribe(t, b.eng, engine.EventFilter{Kinds: []string{"k2"}})
	byState := subscribe(t, b.eng, engine.EventFilter{States: []job.State{job.StateRunning}})

	jobs := b.enqueue(t,
		job.Spec{Kind: "k1", Queue: "q1"},
		job.Spec{Kind: "k2", Queue: "q1"},
		job.Spec{Kind: "k1", Queue: "q2"},
	)
	b.lease(t, engine.LeaseRequest{Queues: []string{"q1"}, Max: 1})

	wantEvent(t, next(t, byQueue), engine.EventInserted, jobs[2].ID, "", job.StateAvailable)
	wantEvent(t, next(t, byKind), engine.EventInserted, jobs[1].ID, "", job.StateAvailable)
	wantEvent(t, next(t, byState), engine.EventLeased, jobs[0].ID, job.StateAvailable, job.StateRunning)
	for name, s := range map[string]*engine.Subscription{"queue": byQueue, "kind": byKind, "state": byState} {
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		if ev, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("filter by %s: extra event %+v (err %v)", name, ev, err)
		}
		cancel()
	}
}

func TestSubscribeValidation(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	for _, tc := range []struct {
		name  string
		f     engine.EventFilter
		field string
	}{
		{"bad queue", engine.EventFilter{Queues: []string{"a b"}}, "queue[0]"},
		{"bad kind", engine.EventFilter{Kinds: []string{"ok", ""}}, "kind[1]"},
		{"bad state", engine.EventFilter{States: []job.State{"done"}}, "state[0]"},
	} {
		_, err := b.eng.Subscribe(tc.f)
		wantValidation(t, err, tc.field)
	}
	if n := b.eng.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after refused subscriptions, want 0", n)
	}
}

// TestSlowSubscriberIsDropped fills a subscriber's buffer: the next event
// drops it with the documented reason, and from then on it holds no
// buffer in the engine, however many events follow.
func TestSlowSubscriberIsDropped(t *testing.T) {
	t.Parallel()
	const buffer = 4
	b := setup(t, engine.Config{EventBuffer: buffer})
	slow := subscribe(t, b.eng, engine.EventFilter{})
	fast := subscribe(t, b.eng, engine.EventFilter{})

	got := 0
	for range 3 {
		b.enqueue(t, specs(buffer, job.Spec{Kind: "k"})...)
		for range buffer {
			next(t, fast)
			got++
		}
	}
	select {
	case <-slow.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the slow subscriber was not dropped")
	}
	_, err := slow.Next(t.Context())
	var slowErr *engine.SlowSubscriberError
	if !errors.As(err, &slowErr) || slowErr.Behind != buffer+1 || !errors.Is(err, job.ErrOverloaded) {
		t.Fatalf("slow Next: %v; want SlowSubscriberError{Behind: %d} matching ErrOverloaded", err, buffer+1)
	}
	if want := "subscriber too slow: 5 events behind"; err.Error() != want {
		t.Fatalf("error text %q, want %q", err.Error(), want)
	}
	if n := b.eng.Subscribers(); n != 1 {
		t.Fatalf("%d subscribers after the drop, want 1 (the fast one)", n)
	}
	if fast.Err() != nil || got != 3*buffer {
		t.Fatalf("fast subscriber: err %v after %d events; want none after %d", fast.Err(), got, 3*buffer)
	}
}

func TestSubscribeLimitAndClose(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{MaxSubscribers: 2})
	first := subscribe(t, b.eng, engine.EventFilter{})
	subscribe(t, b.eng, engine.EventFilter{})
	if _, err := b.eng.Subscribe(engine.EventFilter{}); !errors.Is(err, job.ErrOverloaded) {
		t.Fatalf("third Subscribe: %v, want ErrOverloaded", err)
	}
	first.Close()
	first.Close() // twice is fine
	if _, err := first.Next(t.Context()); !errors.Is(err, engine.ErrSubscriptionClosed) {
		t.Fatalf("Next after Close: %v, want ErrSubscriptionClosed", err)
	}
	subscribe(t, b.eng, engine.EventFilter{})
	if n := b.eng.Subscribers(); n != 2 {
		t.Fatalf("%d subscribers, want 2", n)
	}
}

func TestStopWaitingEndsSubscriptions(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{})
	s := subscribe(t, b.eng, engine.EventFilter{})
	b.eng.StopWaiting()
	if _, err := s.Next(t.Context()); !errors.Is(err, job.ErrUnavailable) {
		t.Fatalf("Next after StopWaiting: %v, want ErrUnavailable", err)
	}
	if _, err := b.eng.Subscribe(engine.EventFilter{}); !errors.Is(err, job.ErrUnavailable) {
		t.Fatalf("Subscribe after StopWaiting: %v, want ErrUnavailable", err)
	}
}

// TestEventsConcurrent publishes from many goroutines while subscribers
// come, read, fall behind and go: under -race it checks the lock-free
// publish path. Every subscriber ends either closed or dropped.
func TestEventsConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t, engine.Config{EventBuffer: 8})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 10 {
				if _, err := b.eng.Enqueue(t.Context(), specs(5, job.Spec{Kind: "k"})...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			for range 10 {
				s, err := b.eng.Subscribe(engine.EventFilter{})
				if err != nil {
					t.Error(err)
					return
				}
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Millisecond)
				for {
					if _, err := s.Next(ctx); err != nil {
						break
					}
				}
				cancel()
				s.Close()
				if err := s.Err(); !errors.Is(err, engine.ErrSubscriptionClosed) && !errors.Is(err, job.ErrOverloaded) {
					t.Errorf("ended subscription: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if n := b.eng.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers left, want 0", n)
	}
}
