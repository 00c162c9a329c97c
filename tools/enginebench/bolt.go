package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bJobs    = []byte("jobs")
	bFetch   = []byte("fetch")
	bRunning = []byte("running")
	bState   = []byte("state")
	bFinal   = []byte("finalized")
)

// boltEngine keeps the jobs in one bucket keyed by id and each secondary
// index of the SQLite schema in a bucket of its own, maintained by hand.
type boltEngine struct {
	db   *bolt.DB
	fill float64
	lean bool
}

func openBolt(dir string, o engineOpts) (*boltEngine, error) {
	opts := &bolt.Options{Timeout: time.Second} // NoSync false: fdatasync on every commit
	switch o.boltFreelist {
	case "array", "":
		opts.FreelistType = bolt.FreelistArrayType
	case "map", "hashmap":
		opts.FreelistType = bolt.FreelistMapType
	default:
		return nil, fmt.Errorf("unknown bbolt freelist %q", o.boltFreelist)
	}
	db, err := bolt.Open(filepath.Join(dir, "drover.bolt"), 0o600, opts)
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bJobs, bFetch, bRunning, bState, bFinal} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &boltEngine{db: db, fill: o.boltFill, lean: o.lean}, nil
}

func (e *boltEngine) Close() error { return e.db.Close() }

func (e *boltEngine) Update(fn func(Tx) error) error {
	return e.db.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		if e.fill > 0 {
			jobs.FillPercent = e.fill
		}
		return fn(&boltTx{
			lean:    e.lean,
			jobs:    jobs,
			fetch:   tx.Bucket(bFetch),
			running: tx.Bucket(bRunning),
			state:   tx.Bucket(bState),
			final:   tx.Bucket(bFinal),
		})
	})
}

// boltTx: bbolt keeps references to the keys and values given to Put until
// the commit, so every Put gets freshly allocated slices.
type boltTx struct {
	lean                               bool
	jobs, fetch, running, state, final *bolt.Bucket
}

func (t *boltTx) Savepoint() error { return nil }
func (t *boltTx) Release(rollback bool) error {
	if rollback {
		return fmt.Errorf("bbolt has no savepoints")
	}
	return nil
}

func idKey(id int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(id)) }

func (t *boltTx) Insert(j *NewJob) (int64, error) {
	seq, err := t.jobs.NextSequence()
	if err != nil {
		return 0, err
	}
	id := int64(seq)
	if err := t.jobs.Put(idKey(id), newRec(j).encode()); err != nil {
		return 0, err
	}
	if err := t.fetch.Put(fetchKey(nil, j.Queue, j.Priority, j.ScheduledAt, id), nil); err != nil {
		return 0, err
	}
	if t.lean {
		return id, nil
	}
	return id, t.state.Put(stateKey(nil, stAvailable, id), nil)
}

func (t *boltTx) Lease(queue string, limit int, now, exp int64, worker string) ([]Leased, error) {
	prefix := fetchPrefix(nil, queue)
	var keys [][]byte
	c := t.fetch.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(keys) < limit; k, _ = c.Next() {
		keys = append(keys, append([]byte(nil), k...))
	}
	out := make([]Leased, 0, len(keys))
	for _, k := range keys {
		id := idFromTail(k)
		ik := idKey(id)
		r, err := decodeRec(t.jobs.Get(ik))
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", id, err)
		}
		r.State = stRunning
		r.Attempt++
		r.AttemptedAt = now
		r.AttemptedBy = worker
		r.LeaseToken = newToken()
		r.LeaseExpiresAt = exp
		r.Settled = ""
		if err := t.jobs.Put(ik, r.encode()); err != nil {
			return nil, err
		}
		if err := t.fetch.Delete(k); err != nil {
			return nil, err
		}
		if !t.lean {
			if err := t.running.Put(runningKey(nil, exp, id), nil); err != nil {
				return nil, err
			}
			if err := t.state.Delete(stateKey(nil, stAvailable, id)); err != nil {
				return nil, err
			}
		}
		if err := t.state.Put(stateKey(nil, stRunning, id), nil); err != nil {
			return nil, err
		}
		out = append(out, Leased{ID: id, Token: r.LeaseToken})
	}
	return out, nil
}

func (t *boltTx) Complete(id int64, token string, now int64) (bool, error) {
	ik := idKey(id)
	v := t.jobs.Get(ik)
	if v == nil {
		return false, nil
	}
	r, err := decodeRec(v)
	if err != nil {
		return false, fmt.Errorf("job %d: %w", id, err)
	}
	if r.State != stRunning || r.LeaseToken != token {
		return false, nil
	}
	oldExp := r.LeaseExpiresAt
	r.State = stCompleted
	r.FinalizedAt = now
	r.LeaseExpiresAt = 0
	r.Settled = "complete"
	if err := t.jobs.Put(ik, r.encode()); err != nil {
		return false, err
	}
	if !t.lean {
		if err := t.running.Delete(runningKey(nil, oldExp, id)); err != nil {
			return false, err
		}
	}
	if err := t.state.Delete(stateKey(nil, stRunning, id)); err != nil {
		return false, err
	}
	if err := t.state.Put(stateKey(nil, stCompleted, id), nil); err != nil {
		return false, err
	}
	if t.lean {
		return true, nil
	}
	return true, t.final.Put(finalKey(nil, now, id), nil)
}
