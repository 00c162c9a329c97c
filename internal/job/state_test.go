package job_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// Short names keep the tables below readable.
const (
	pend  = job.StatePending
	schd  = job.StateScheduled
	avail = job.StateAvailable
	run   = job.StateRunning
	rtry  = job.StateRetryable
	done  = job.StateCompleted
	canc  = job.StateCancelled
	disc  = job.StateDiscarded
)

func TestStatesListsEveryStateOnce(t *testing.T) {
	t.Parallel()
	want := []job.State{pend, schd, avail, run, rtry, done, canc, disc}
	if len(job.States) != len(want) {
		t.Fatalf("len(States) = %d, want %d: %v", len(job.States), len(want), job.States)
	}
	for i, s := range want {
		if job.States[i] != s {
			t.Errorf("States[%d] = %q, want %q (lifecycle order)", i, job.States[i], s)
		}
	}
}

func TestCanTransition(t *testing.T) {
	t.Parallel()
	// edges is the whole state machine, written out by hand: a change to
	// the edges in state.go must change this table too.
	edges := map[job.State]map[job.State]bool{
		pend:  {avail: true, schd: true, canc: true},
		schd:  {avail: true, canc: true},
		avail: {run: true, canc: true},
		run:   {done: true, rtry: true, avail: true, schd: true, canc: true, disc: true},
		rtry:  {avail: true, canc: true},
		done:  {avail: true},
		canc:  {avail: true},
		disc:  {avail: true},
	}
	if len(edges) != len(job.States) {
		t.Fatalf("the expected table covers %d states, States has %d", len(edges), len(job.States))
	}
	for _, from := range job.States {
		for _, to := range job.States {
			t.Run(fmt.Sprintf("%s_to_%s", from, to), func(t *testing.T) {
				t.Parallel()
				want := edges[from][to]
				if got := job.CanTransition(from, to); got != want {
					t.Errorf("CanTransition(%q, %q) = %v, want %v", from, to, got, want)
				}
			})
		}
	}
}

func TestCanTransitionInvalidStates(t *testing.T) {
	t.Parallel()
	for _, s := range job.States {
		if job.CanTransition("bogus", s) {
			t.Errorf("CanTransition(bogus, %q) = true", s)
		}
		if job.CanTransition(s, "bogus") {
			t.Errorf("CanTransition(%q, bogus) = true", s)
		}
		if job.CanTransition(s, "") || job.CanTransition("", s) {
			t.Errorf("a transition with the empty state is allowed for %q", s)
		}
	}
}

// TestNoSelfLoops checks that no state has an edge to itself: a store that
// "moves" a job to its own state has done nothing.
func TestNoSelfLoops(t *testing.T) {
	t.Parallel()
	for _, s := range job.States {
		if job.CanTransition(s, s) {
			t.Errorf("CanTransition(%q, %q) = true", s, s)
		}
	}
}

func TestStateValidAndFinal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state job.State
		valid bool
		final bool
	}{
		{pend, true, false},
		{schd, true, false},
		{avail, true, false},
		{run, true, false},
		{rtry, true, false},
		{done, true, true},
		{canc, true, true},
		{disc, true, true},
		{"", false, false},
		{"bogus", false, false},
		{"Completed", false, false}, // states are case sensitive
		{"canceled", false, false},  // the API spells it "cancelled"
		{" running", false, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.state), func(t *testing.T) {
			t.Parallel()
			if got := tt.state.Valid(); got != tt.valid {
				t.Errorf("%q.Valid() = %v, want %v", tt.state, got, tt.valid)
			}
			if got := tt.state.Final(); got != tt.final {
				t.Errorf("%q.Final() = %v, want %v", tt.state, got, tt.final)
			}
		})
	}
	for _, s := range job.States {
		if !s.Valid() {
			t.Errorf("States holds %q, which is not Valid", s)
		}
	}
}

// TestFinalStatesOnlyLeaveByRetry checks the promise in State.Final's doc:
// a final state changes only by an operator retry (to available).
func TestFinalStatesOnlyLeaveByRetry(t *testing.T) {
	t.Parallel()
	for _, from := range job.States {
		if !from.Final() {
			continue
		}
		for _, to := range job.States {
			if job.CanTransition(from, to) && to != avail {
				t.Errorf("final state %q has an edge to %q", from, to)
			}
		}
		if !job.CanRetry(from) {
			t.Errorf("final state %q cannot be retried", from)
		}
	}
}

func TestInitialState(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name        string
		scheduledAt time.Time
		unmetDeps   bool
		want        job.State
	}{
		{"now", now, false, avail},
		{"past", now.Add(-time.Hour), false, avail},
		{"zero time", time.Time{}, false, avail},
		{"one nanosecond ahead", now.Add(time.Nanosecond), false, schd},
		{"future", now.Add(time.Hour), false, schd},
		{"unmet deps now", now, true, pend},
		{"unmet deps past", now.Add(-time.Hour), true, pend},
		{"unmet deps future", now.Add(time.Hour), true, pend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := job.InitialState(tt.scheduledAt, now, tt.unmetDeps); got != tt.want {
				t.Errorf("InitialState(%v, %v, %v) = %q, want %q", tt.scheduledAt, now, tt.unmetDeps, got, tt.want)
			}
		})
	}
}

func TestReadyState(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		at   time.Time
		want job.State
	}{
		{"before now", now.Add(-time.Second), avail},
		{"equal to now", now, avail},
		{"equal to now in another zone", now.In(time.FixedZone("X", 3600)), avail},
		{"after now", now.Add(time.Nanosecond), schd},
		{"zero", time.Time{}, avail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := job.ReadyState(tt.at, now); got != tt.want {
				t.Errorf("ReadyState(%v, %v) = %q, want %q", tt.at, now, got, tt.want)
			}
		})
	}
}

func TestFailedState(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	before, after := now.Add(-time.Second), now.Add(time.Second)
	tests := []struct {
		name             string
		attempt, maxAtts int
		discard          bool
		retryAt          time.Time
		want             job.State
	}{
		{"attempts left, retry later", 1, 3, false, after, rtry},
		{"attempts left, retry at now", 1, 3, false, now, avail},
		{"attempts left, retry in the past", 1, 3, false, before, avail},
		{"attempts left, retry one nanosecond ahead", 2, 3, false, now.Add(time.Nanosecond), rtry},
		{"last attempt used, retry later", 3, 3, false, after, disc},
		{"last attempt used, retry now", 3, 3, false, now, disc},
		{"over max", 4, 3, false, before, disc},
		{"discard with attempts left, retry later", 1, 3, true, after, disc},
		{"discard with attempts left, retry now", 1, 3, true, now, disc},
		{"discard on last attempt", 3, 3, true, before, disc},
		{"single attempt", 1, 1, false, after, disc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := job.FailedState(tt.attempt, tt.maxAtts, tt.discard, tt.retryAt, now)
			if got != tt.want {
				t.Errorf("FailedState(%d, %d, %v, %v, now) = %q, want %q",
					tt.attempt, tt.maxAtts, tt.discard, tt.retryAt.Sub(now), got, tt.want)
			}
			if !job.CanTransition(run, got) {
				t.Errorf("FailedState chose %q, but running has no edge to it", got)
			}
		})
	}
}

func TestRescuedState(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		attempt, maxAtts int
		want             job.State
	}{
		{"first of many", 1, 25, avail},
		{"one left", 24, 25, avail},
		{"last", 25, 25, disc},
		{"over max", 26, 25, disc},
		{"single attempt", 1, 1, disc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := job.RescuedState(tt.attempt, tt.maxAtts)
			if got != tt.want {
				t.Errorf("RescuedState(%d, %d) = %q, want %q", tt.attempt, tt.maxAtts, got, tt.want)
			}
			if !job.CanTransition(run, got) {
				t.Errorf("RescuedState chose %q, but running has no edge to it", got)
			}
		})
	}
}

func TestStatePredicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		state                   job.State
		cancel, retry, del      bool
		uniqueNoPeriod, uniqPer bool
	}{
		{pend, true, false, true, true, true},
		{schd, true, true, true, true, true},
		{avail, true, true, true, true, true},
		{run, true, false, false, true, true},
		{rtry, true, true, true, true, true},
		{done, false, true, true, false, true},
		{canc, false, true, true, false, false},
		{disc, false, true, true, false, false},
	}
	if len(tests) != len(job.States) {
		t.Fatalf("table covers %d states, States has %d", len(tests), len(job.States))
	}
	for _, tt := range tests {
		t.Run(string(tt.state), func(t *testing.T) {
			t.Parallel()
			if got := job.CanCancel(tt.state); got != tt.cancel {
				t.Errorf("CanCancel(%q) = %v, want %v", tt.state, got, tt.cancel)
			}
			if got := job.CanRetry(tt.state); got != tt.retry {
				t.Errorf("CanRetry(%q) = %v, want %v", tt.state, got, tt.retry)
			}
			if got := job.CanDelete(tt.state); got != tt.del {
				t.Errorf("CanDelete(%q) = %v, want %v", tt.state, got, tt.del)
			}
			if got := job.HoldsUnique(tt.state, false); got != tt.uniqueNoPeriod {
				t.Errorf("HoldsUnique(%q, false) = %v, want %v", tt.state, got, tt.uniqueNoPeriod)
			}
			if got := job.HoldsUnique(tt.state, true); got != tt.uniqPer {
				t.Errorf("HoldsUnique(%q, true) = %v, want %v", tt.state, got, tt.uniqPer)
			}
			// A retry makes the job available, so it needs that edge
			// (an available job is already there).
			if tt.retry && tt.state != avail && !job.CanTransition(tt.state, avail) {
				t.Errorf("CanRetry(%q) but no edge to available", tt.state)
			}
		})
	}
}
