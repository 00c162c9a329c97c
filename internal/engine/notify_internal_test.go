package engine

import "testing"

// pending reports whether w has a wake-up waiting.
func pending(w *waiter) bool { return len(w.ch) == 1 }

// TestUnregisterPassesOnAnUnusedWakeUp checks that a waiter that leaves
// with a wake-up it did not act on hands it to the next waiter of each of
// its queues, and that a waiter that leaves without one wakes nobody.
func TestUnregisterPassesOnAnUnusedWakeUp(t *testing.T) {
	t.Parallel()
	n := newNotifier()
	first := n.register([]string{"a", "b"})
	onA := n.register([]string{"a"})
	onB := n.register([]string{"b"})
	other := n.register([]string{"c"})

	n.notify("a", 1) // wakes the oldest waiter of a: first
	if !pending(first) || pending(onA) {
		t.Fatalf("notify(a, 1): first pending %v, onA pending %v; want only first", pending(first), pending(onA))
	}
	n.unregister(first) // gives up without looking: the wake-up moves on
	if !pending(onA) || !pending(onB) {
		t.Errorf("after first left with a wake-up: onA pending %v, onB pending %v; want both", pending(onA), pending(onB))
	}
	if pending(other) {
		t.Error("a waiter of another queue was woken")
	}
	if n.count != 3 || len(n.waiters["a"]) != 1 || len(n.waiters["b"]) != 1 {
		t.Errorf("after unregister: count %d, waiters of a %d, of b %d; want 3, 1, 1", n.count, len(n.waiters["a"]), len(n.waiters["b"]))
	}

	<-onA.ch // onA acts on its wake-up, then leaves: nothing to pass on
	late := n.register([]string{"a"})
	n.unregister(onA)
	if pending(late) {
		t.Error("a waiter that used its wake-up passed one on")
	}
	for _, w := range []*waiter{onB, other, late} {
		n.unregister(w)
	}
	if n.count != 0 || len(n.waiters) != 0 {
		t.Errorf("after every waiter left: count %d, queues %d; want 0, 0", n.count, len(n.waiters))
	}
}
