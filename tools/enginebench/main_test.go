package main

import (
	"slices"
	"testing"
)

func TestQueueShape(t *testing.T) {
	for _, eng := range []string{"sqlite", "bbolt", "pebble"} {
		for _, lean := range []bool{false, true} {
			t.Run(eng, func(t *testing.T) {
				dir := t.TempDir()
				o := engineOpts{boltFreelist: "array", boltFill: 0.5, sqliteCache: 8, lean: lean}
				e, err := openEngine(eng, dir, o)
				if err != nil {
					t.Fatal(err)
				}
				ins := func(queue string, prio, sched int64) int64 {
					var id int64
					err := e.Update(func(tx Tx) error {
						var err error
						id, err = tx.Insert(&NewJob{Queue: queue, Kind: "k", Priority: prio, ScheduledAt: sched, CreatedAt: sched, MaxAttempts: 1, Args: []byte(`{}`)})
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					return id
				}
				lease := func(queue string, n int) []Leased {
					var got []Leased
					err := e.Update(func(tx Tx) error {
						var err error
						got, err = tx.Lease(queue, n, 10, 20, "w")
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					return got
				}
				complete := func(id int64, token string) bool {
					var ok bool
					if err := e.Update(func(tx Tx) error {
						var err error
						ok, err = tx.Complete(id, token, 30)
						return err
					}); err != nil {
						t.Fatal(err)
					}
					return ok
				}
				low := ins("a", 2, 1)
				late := ins("a", 1, 5)
				early := ins("a", 1, 3)
				other := ins("b", 1, 1)
				if !(low < late && late < early && early < other) {
					t.Fatalf("ids do not increase: %d %d %d %d", low, late, early, other)
				}
				got := lease("a", 2)
				ids := []int64{}
				for _, l := range got {
					ids = append(ids, l.ID)
				}
				slices.Sort(ids)
				if !slices.Equal(ids, []int64{late, early}) {
					t.Fatalf("leased %v, want %v", ids, []int64{late, early})
				}
				if complete(got[0].ID, "wrong") {
					t.Fatal("completed with a wrong token")
				}
				if !complete(got[0].ID, got[0].Token) || complete(got[0].ID, got[0].Token) {
					t.Fatal("complete: want true once, then false")
				}
				if g := lease("a", 10); len(g) != 1 || g[0].ID != low {
					t.Fatalf("second lease got %v, want job %d", g, low)
				}
				if err := e.Close(); err != nil {
					t.Fatal(err)
				}
				// Reopened: the state and the id sequence persist.
				if e, err = openEngine(eng, dir, o); err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				if g := lease("a", 10); len(g) != 0 {
					t.Fatalf("after reopen leased %v from an empty queue", g)
				}
				if id := ins("a", 1, 1); id <= other {
					t.Fatalf("id after reopen %d, want > %d", id, other)
				}
				if g := lease("b", 10); len(g) != 1 || g[0].ID != other {
					t.Fatalf("lease b got %v", g)
				}
			})
		}
	}
}

func TestWorkloadsSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	for _, eng := range []string{"sqlite", "bbolt", "pebble"} {
		t.Run(eng, func(t *testing.T) {
			c := &config{parent: t.TempDir(), reps: 1, bulk: 500, bulkBatch: 100, single: 20, group: 200,
				clients: 10, drain: 1000, fetchers: 2, leaseN: 50, eTarget: 300, maxBatch: 64, savepoints: true,
				eo: engineOpts{boltFreelist: "array", boltFill: 0.5, sqliteCache: 8}}
			runFresh(c, eng, func(dir string, e Engine) (Engine, meas) { return wlBulk(c, dir, e) })
			runFresh(c, eng, func(_ string, e Engine) (Engine, meas) { return e, wlSingle(c, e) })
			runFresh(c, eng, func(_ string, e Engine) (Engine, meas) { return e, wlGroup(c, e) })
			runFresh(c, eng, func(_ string, e Engine) (Engine, meas) { return e, wlDrain(c, e) })
			res := newResults()
			wlFlat(c, eng, "other", 500, res)
			wlFlat(c, eng, "done", 500, res)
			if len(res.m["e-done-500"][eng]) != 1 {
				t.Fatal("no e measurement")
			}
		})
	}
}
