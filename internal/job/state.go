package job

import "time"

// transitions lists every edge of the state machine. Stores apply the
// edges; the rules that choose between them live in the functions below so
// that every store makes the same choice.
var transitions = map[State][]State{
	// A pending job becomes available (or scheduled) when its
	// dependencies complete, and may be cancelled.
	StatePending: {StateAvailable, StateScheduled, StateCancelled},
	// A scheduled job is promoted when due, or cancelled; an operator
	// retry makes it available at once.
	StateScheduled: {StateAvailable, StateCancelled},
	// An available job is leased, or cancelled.
	StateAvailable: {StateRunning, StateCancelled},
	// A running job is settled by its lease holder, cancelled by an
	// operator, or rescued when its lease expires (to available or, with
	// no attempts left, discarded).
	StateRunning: {
		StateCompleted, StateRetryable, StateAvailable, StateScheduled,
		StateCancelled, StateDiscarded,
	},
	// A retryable job is promoted at its next run time, retried now by an
	// operator, or cancelled.
	StateRetryable: {StateAvailable, StateCancelled},
	// Final states change only by an explicit operator retry.
	StateCompleted: {StateAvailable},
	StateCancelled: {StateAvailable},
	StateDiscarded: {StateAvailable},
}

// CanTransition reports whether the state machine has an edge from one
// state to another.
func CanTransition(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// InitialState is the state of a newly inserted job: pending while any
// dependency is unfinished, scheduled when it may first run after now, and
// available otherwise.
func InitialState(scheduledAt, now time.Time, unmetDeps bool) State {
	switch {
	case unmetDeps:
		return StatePending
	case scheduledAt.After(now):
		return StateScheduled
	default:
		return StateAvailable
	}
}

// ReadyState is the state of a job that is ready except for time: scheduled
// when at is after now, available otherwise.
func ReadyState(at, now time.Time) State {
	if at.After(now) {
		return StateScheduled
	}
	return StateAvailable
}

// FailedState is the state of a running job after its attempt'th attempt
// fails: discarded when the worker said so or no attempt is left, available
// when it may retry now, and retryable when it must wait until retryAt.
func FailedState(attempt, maxAttempts int, discard bool, retryAt, now time.Time) State {
	switch {
	case discard || attempt >= maxAttempts:
		return StateDiscarded
	case retryAt.After(now):
		return StateRetryable
	default:
		return StateAvailable
	}
}

// RescuedState is the state of a running job whose lease expired during
// its attempt'th attempt. The expiry counts as a failed attempt, and the
// job is re-delivered at once rather than after a backoff, because a lost
// worker says nothing about the job itself.
func RescuedState(attempt, maxAttempts int) State {
	if attempt >= maxAttempts {
		return StateDiscarded
	}
	return StateAvailable
}

// CanCancel reports whether a job in state s may be cancelled. Cancelling
// a running job revokes its lease: the worker's settle is then refused.
func CanCancel(s State) bool { return CanTransition(s, StateCancelled) }

// CanRetry reports whether an operator may retry a job in state s (make it
// available now). A running or pending job may not be retried.
func CanRetry(s State) bool {
	return s == StateScheduled || s == StateRetryable || s == StateAvailable || s.Final()
}

// CanDelete reports whether a job in state s may be deleted. A running job
// must be cancelled first, so that no worker holds a lease on a job that
// no longer exists.
func CanDelete(s State) bool { return s != StateRunning }

// HoldsUnique reports whether a job in state s still holds its unique key.
// A key without a period is held while the job is live (not final); a key
// with a period is also held by a completed job, so that a kind runs at most
// once per period. Cancelled and discarded jobs release their key.
func HoldsUnique(s State, byPeriod bool) bool {
	switch s {
	case StateCancelled, StateDiscarded:
		return false
	case StateCompleted:
		return byPeriod
	default:
		return true
	}
}
