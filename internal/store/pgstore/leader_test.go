package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// Short terms keep the tests quick; every wait below is a poll with a
// generous deadline, so a slow machine only makes them slower.
const (
	testTTL   = time.Second
	testRenew = 200 * time.Millisecond
	// patience bounds every wait: many times any expected duration.
	patience = 20 * time.Second
	// instant is how long one sample of all nodes may take to count: well
	// under the TTL/10 margin that separates one leader's local term from
	// the next leader's election, so that two nodes seen leading in one
	// sample really led at once.
	instant = 20 * time.Millisecond
)

// node is one elector campaigning in its own goroutine.
type node struct {
	id     string
	store  *pgstore.Store
	el     *pgstore.Elector
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	changes []bool // what OnChange said, in order
}

// startNode starts an elector for id on s; it is stopped (and waited for)
// when the test ends, if the test did not stop it. onChange, when set, is
// called after the change is recorded.
func startNode(t *testing.T, s *pgstore.Store, id string, ttl, renew time.Duration, onChange func(bool)) *node {
	t.Helper()
	n := &node{id: id, store: s, done: make(chan struct{})}
	el, err := pgstore.NewElector(s, pgstore.ElectorOptions{
		ID:     id,
		TTL:    ttl,
		Renew:  renew,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)),
		OnChange: func(leader bool) {
			n.mu.Lock()
			n.changes = append(n.changes, leader)
			n.mu.Unlock()
			if onChange != nil {
				onChange(leader)
			}
		},
	})
	if err != nil {
		t.Fatalf("NewElector: %v", err)
	}
	n.el = el
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	n.cancel = cancel
	go func() {
		defer close(n.done)
		el.Run(ctx)
	}()
	t.Cleanup(func() { n.stop(t) })
	return n
}

// stop cancels the node's Run and waits for it to resign and return.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(patience):
		t.Errorf("%s: Run did not return %s after its context was cancelled", n.id, patience)
	}
}

func (n *node) changesSoFar() []bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.changes)
}

// waitChanges waits until OnChange has been called with want, in order:
// Run reports a loss at its next turn, after IsLeader already says so.
func (n *node) waitChanges(t *testing.T, want ...bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !slices.Equal(n.changesSoFar(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: OnChange calls = %v, want %v", n.id, n.changesSoFar(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// openStore opens another store on schema, closed when the test ends.
func openStore(t *testing.T, url, schema string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 4})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// cluster watches nodes that compete for one role.
type cluster struct {
	t     *testing.T
	nodes []*node
}

// leaders returns the indexes of the nodes that lead now, and fails the
// test if there are two: the property the election exists for.
func (c *cluster) leaders() []int {
	c.t.Helper()
	for {
		start := time.Now()
		var ls []int
		for i, n := range c.nodes {
			if n.el.IsLeader() {
				ls = append(ls, i)
			}
		}
		if time.Since(start) > instant {
			continue // descheduled mid-sample: not one instant
		}
		if len(ls) > 1 {
			ids := []string{}
			for _, i := range ls {
				ids = append(ids, c.nodes[i].id)
			}
			c.t.Fatalf("%v all lead at once", ids)
		}
		return ls
	}
}

// waitFor samples until cond holds for the current leaders and returns
// them, failing the test if two ever lead at once or patience runs out.
func (c *cluster) waitFor(what string, cond func(leaders []int) bool) []int {
	c.t.Helper()
	deadline := time.Now().Add(patience)
	for {
		ls := c.leaders()
		if cond(ls) {
			return ls
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("after %s, still waiting for %s (leaders now: %v)", patience, what, ls)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// oneLeader waits until exactly one node leads and returns it.
func (c *cluster) oneLeader() *node {
	c.t.Helper()
	ls := c.waitFor("one leader", func(ls []int) bool { return len(ls) == 1 })
	return c.nodes[ls[0]]
}

// dbNow returns the database's clock, the one terms are measured on.
func dbNow(t *testing.T, s *pgstore.Store) time.Time {
	t.Helper()
	var now time.Time
	if err := s.Pool().QueryRow(t.Context(), `SELECT now()`).Scan(&now); err != nil {
		t.Fatalf("SELECT now(): %v", err)
	}
	return now
}

// row reads the role's row as stored, expired or not.
func row(t *testing.T, s *pgstore.Store) (id string, elected, expires time.Time) {
	t.Helper()
	err := s.Pool().QueryRow(t.Context(), `SELECT leader_id, elected_at, expires_at FROM drover_leader
		WHERE name = 'maintenance'`).Scan(&id, &elected, &expires)
	if err != nil {
		t.Fatalf("read drover_leader: %v", err)
	}
	return id, elected, expires
}

// TestElectorOneLeader runs three electors on one store: exactly one
// leads, the same one through many renewals, and every node's Leader
// names it.
func TestElectorOneLeader(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	s := openStore(t, url, pgtest.TestSchema(t, url))
	// A longer term than the other tests': the leader must keep the role
	// through a database that stalls for a moment (CI's PostgreSQL shares
	// a disk that, under load, has held a commit for most of a second),
	// since losing it then would be correct, not a bug this test is after.
	const ttl = 3 * time.Second
	c := &cluster{t: t}
	for i := range 3 {
		c.nodes = append(c.nodes, startNode(t, s, fmt.Sprintf("node-%d", i), ttl, testRenew, nil))
	}
	leader := c.oneLeader()

	// Two terms (thirty renew periods): the leader renews in time, nobody
	// else is elected.
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if ls := c.leaders(); len(ls) != 1 || c.nodes[ls[0]] != leader {
			t.Fatalf("leaders = %v, want only %s throughout", ls, leader.id)
		}
	}

	for _, n := range c.nodes {
		id, expires, err := n.el.Leader(t.Context())
		if err != nil {
			t.Fatalf("%s: Leader: %v", n.id, err)
		}
		if id != leader.id {
			t.Errorf("%s: Leader = %q, want %q", n.id, id, leader.id)
		}
		if now := dbNow(t, s); !expires.After(now) {
			t.Errorf("%s: Leader expires at %v, not after the database's now %v", n.id, expires, now)
		}
		want := []bool(nil)
		if n == leader {
			want = []bool{true}
		}
		if got := n.changesSoFar(); !slices.Equal(got, want) {
			t.Errorf("%s: OnChange calls = %v, want %v", n.id, got, want)
		}
	}
}

// TestElectorLeaderDies kills the leader without letting it resign (its
// pool closes, as when the process dies or loses the network): another
// node takes over, but only once the dead leader's term has expired in the
// database, and never while the old leader still believes it leads.
func TestElectorLeaderDies(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	observer := openStore(t, url, schema)
	c := &cluster{t: t}
	for i := range 3 {
		// Each node has its own store, so that one can die alone.
		c.nodes = append(c.nodes, startNode(t, openStore(t, url, schema), fmt.Sprintf("node-%d", i), testTTL, testRenew, nil))
	}
	old := c.oneLeader()

	// Pool.Close waits for a claim in flight, so no renewal lands after it.
	old.store.Pool().Close()
	oldID, _, oldExpires := row(t, observer)
	if oldID != old.id {
		t.Fatalf("after the kill the row names %q, want the dead leader %q", oldID, old.id)
	}

	next := c.nodes[c.waitFor("a new leader", func(ls []int) bool {
		return len(ls) == 1 && c.nodes[ls[0]] != old
	})[0]]
	now := dbNow(t, observer)
	id, elected, _ := row(t, observer)
	if id != next.id {
		t.Fatalf("the row names %q, want the new leader %q", id, next.id)
	}
	if elected.Before(oldExpires) {
		t.Errorf("%s was elected at %v, before the dead leader's term ended at %v", next.id, elected, oldExpires)
	}
	if now.Before(oldExpires) {
		t.Errorf("a new leader at database time %v, before the dead leader's term ended at %v", now, oldExpires)
	}
	if old.el.IsLeader() {
		t.Errorf("the dead leader %s still believes it leads", old.id)
	}
	old.waitChanges(t, true, false)
}

// TestElectorResigns stops the leader gracefully: it resigns, so another
// node takes over at its next try, long before the 30s term would have
// expired.
func TestElectorResigns(t *testing.T) {
	t.Parallel()
	const ttl = 30 * time.Second
	url := pgtest.TestURL(t)
	s := openStore(t, url, pgtest.TestSchema(t, url))
	c := &cluster{t: t}
	for i := range 3 {
		c.nodes = append(c.nodes, startNode(t, s, fmt.Sprintf("node-%d", i), ttl, testRenew, nil))
	}
	old := c.oneLeader()
	_, oldExpires, err := old.el.Leader(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	old.stop(t)
	if old.el.IsLeader() {
		t.Errorf("%s still leads after Run returned", old.id)
	}
	if got := old.changesSoFar(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("stopped leader's OnChange calls = %v, want [true false]", got)
	}
	next := c.nodes[c.waitFor("a new leader", func(ls []int) bool {
		return len(ls) == 1 && c.nodes[ls[0]] != old
	})[0]]
	if now := dbNow(t, s); !now.Before(oldExpires) {
		t.Errorf("%s took over at database time %v, not before the resigned term's end %v: the resignation did not hand over", next.id, now, oldExpires)
	}
	if id, _, err := next.el.Leader(t.Context()); err != nil || id != next.id {
		t.Errorf("Leader = %q, %v; want %q", id, err, next.id)
	}
}

// TestElectorLapses checks that IsLeader turns false by itself once
// renewals stop succeeding, within the term, whether Run keeps failing
// (the pool is closed) or is stuck (in a slow OnChange).
func TestElectorLapses(t *testing.T) {
	t.Parallel()
	t.Run("pool closed", func(t *testing.T) {
		t.Parallel()
		url := pgtest.TestURL(t)
		n := startNode(t, openStore(t, url, pgtest.TestSchema(t, url)), "node-0", testTTL, testRenew, nil)
		c := &cluster{t: t, nodes: []*node{n}}
		c.oneLeader()
		n.store.Pool().Close()
		c.waitFor("the leader to lapse", func(ls []int) bool { return len(ls) == 0 })
		n.waitChanges(t, true, false) // Run noticed too
	})
	t.Run("run stuck", func(t *testing.T) {
		t.Parallel()
		url := pgtest.TestURL(t)
		release := make(chan struct{})
		// OnChange blocks Run right after it gains the role: no renewal
		// follows, and only IsLeader's own check can end the term.
		n := startNode(t, openStore(t, url, pgtest.TestSchema(t, url)), "node-0", testTTL, testRenew, func(leader bool) {
			if leader {
				<-release
			}
		})
		t.Cleanup(func() { close(release) }) // runs before the node's stop
		c := &cluster{t: t, nodes: []*node{n}}
		c.oneLeader()
		c.waitFor("the leader to lapse", func(ls []int) bool { return len(ls) == 0 })
		if got := n.changesSoFar(); !slices.Equal(got, []bool{true}) {
			t.Errorf("OnChange calls = %v, want [true] (Run is stuck in the first)", got)
		}
	})
}

// TestNewElectorValidates checks the options NewElector refuses.
func TestNewElectorValidates(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	s := openStore(t, url, pgtest.TestSchema(t, url))
	for _, tc := range []struct {
		name string
		opts pgstore.ElectorOptions
	}{
		{"no id", pgstore.ElectorOptions{}},
		{"negative ttl", pgstore.ElectorOptions{ID: "a", TTL: -time.Second}},
		{"negative renew", pgstore.ElectorOptions{ID: "a", Renew: -time.Second}},
		{"renew as long as the ttl", pgstore.ElectorOptions{ID: "a", TTL: time.Second, Renew: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := pgstore.NewElector(s, tc.opts)
			if ve := (*job.ValidationError)(nil); !errors.As(err, &ve) {
				t.Errorf("NewElector(%+v) = %v, want a *job.ValidationError", tc.opts, err)
			}
		})
	}
	if _, err := pgstore.NewElector(s, pgstore.ElectorOptions{ID: "a"}); err != nil {
		t.Errorf("NewElector with defaults: %v", err)
	}
}
