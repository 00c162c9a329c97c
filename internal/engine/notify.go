package engine

import (
	"sync"
)

// notifier wakes lease calls that wait for jobs in a queue. A waiter
// registers for its queues before it tries to lease, so that a job that
// arrives between its try and its wait is never missed.
type notifier struct {
	mu      sync.Mutex
	waiters map[string][]*waiter
	count   int
}

type waiter struct {
	ch     chan struct{}
	queues []string
}

func newNotifier() *notifier {
	return &notifier{waiters: map[string][]*waiter{}}
}

// register adds a waiter for queues. The caller must unregister it.
func (n *notifier) register(queues []string) *waiter {
	w := &waiter{ch: make(chan struct{}, 1), queues: queues}
	n.mu.Lock()
	n.count++
	for _, q := range queues {
		n.waiters[q] = append(n.waiters[q], w)
	}
	n.mu.Unlock()
	return w
}

// unregister removes w. A wake-up that w received but did not act on
// (it gave up, its wait over, at the moment a job arrived) is passed on to
// another waiter of each of w's queues, so that it is not lost with w: a
// job that arrives while waiters remain always wakes one of them, without
// waiting for their next poll.
func (n *notifier) unregister(w *waiter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.count--
	for _, q := range w.queues {
		ws := n.waiters[q]
		for i, x := range ws {
			if x == w {
				ws = append(ws[:i], ws[i+1:]...)
				break
			}
		}
		if len(ws) == 0 {
			delete(n.waiters, q)
		} else {
			n.waiters[q] = ws
		}
	}
	select {
	case <-w.ch:
		for _, q := range w.queues {
			n.wakeOne(q)
		}
	default:
	}
}

// wakeOne signals the oldest waiter of queue that has no wake-up pending
// yet. The caller holds n.mu.
func (n *notifier) wakeOne(queue string) {
	for _, w := range n.waiters[queue] {
		select {
		case w.ch <- struct{}{}:
			return
		default:
		}
	}
}

// notify wakes up to count waiters of queue (all of them when count < 0),
// oldest first. A woken waiter that finds nothing waits again; one that
// gives up instead passes its wake-up on (see unregister). Every waiter
// also re-checks on its own at the poll interval, for wake-ups that never
// reach this process.
func (n *notifier) notify(queue string, count int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	woken := 0
	for _, w := range n.waiters[queue] {
		if count >= 0 && woken >= count {
			break
		}
		select {
		case w.ch <- struct{}{}:
			woken++
		default:
			// Already signalled; it will look for jobs anyway.
		}
	}
}

// notifyAll wakes every waiter of every queue.
func (n *notifier) notifyAll() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, ws := range n.waiters {
		for _, w := range ws {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}
