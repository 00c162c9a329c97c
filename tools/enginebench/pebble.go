package main

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2"
)

// Key prefixes of the single Pebble keyspace.
const (
	pJobs    = 'j'
	pFetch   = 'f'
	pRunning = 'r'
	pState   = 's'
	pFinal   = 'd'
)

// pebbleEngine keeps the same records and indexes as boltEngine under key
// prefixes. A transaction is an indexed batch (it reads its own writes),
// committed with pebble.Sync; only the one writer goroutine writes, so no
// conflict detection is needed.
type pebbleEngine struct {
	db     *pebble.DB
	nextID int64
	lean   bool
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)         {}
func (quietLogger) Errorf(string, ...any)        {}
func (quietLogger) Fatalf(f string, args ...any) { panic(fmt.Sprintf(f, args...)) }

func openPebble(dir string, o engineOpts) (*pebbleEngine, error) {
	db, err := pebble.Open(dir, &pebble.Options{Logger: quietLogger{}})
	if err != nil {
		return nil, err
	}
	e := &pebbleEngine{db: db, nextID: 1, lean: o.lean}
	// The next id is one past the last job key.
	it, err := db.NewIter(&pebble.IterOptions{LowerBound: []byte{pJobs}, UpperBound: []byte{pJobs + 1}})
	if err != nil {
		db.Close()
		return nil, err
	}
	if it.Last() {
		e.nextID = idFromTail(it.Key()) + 1
	}
	if err := it.Close(); err != nil {
		db.Close()
		return nil, err
	}
	return e, nil
}

func (e *pebbleEngine) Close() error { return e.db.Close() }

func (e *pebbleEngine) Update(fn func(Tx) error) error {
	b := e.db.NewIndexedBatch()
	defer b.Close()
	t := &pebbleTx{e: e, b: b, nextID: e.nextID}
	if err := fn(t); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	e.nextID = t.nextID
	return nil
}

type pebbleTx struct {
	e      *pebbleEngine
	b      *pebble.Batch
	nextID int64
	kb     []byte
}

func (t *pebbleTx) Savepoint() error { return nil }
func (t *pebbleTx) Release(rollback bool) error {
	if rollback {
		return errors.New("pebble batches have no savepoints")
	}
	return nil
}

func jobKey(b []byte, id int64) []byte { return be64(append(b, pJobs), id) }

func (t *pebbleTx) set(k []byte) error { return t.b.Set(k, nil, nil) }

func (t *pebbleTx) Insert(j *NewJob) (int64, error) {
	id := t.nextID
	t.nextID++
	if err := t.b.Set(jobKey(t.kb[:0], id), newRec(j).encode(), nil); err != nil {
		return 0, err
	}
	if err := t.set(fetchKey(append(t.kb[:0], pFetch), j.Queue, j.Priority, j.ScheduledAt, id)); err != nil {
		return 0, err
	}
	if t.e.lean {
		return id, nil
	}
	return id, t.set(stateKey(append(t.kb[:0], pState), stAvailable, id))
}

func (t *pebbleTx) get(id int64) (*rec, error) {
	v, closer, err := t.b.Get(jobKey(t.kb[:0], id))
	if err != nil {
		return nil, err
	}
	r, err := decodeRec(v)
	closer.Close()
	return r, err
}

func (t *pebbleTx) Lease(queue string, limit int, now, exp int64, worker string) ([]Leased, error) {
	lo := fetchPrefix([]byte{pFetch}, queue)
	hi := append([]byte(nil), lo...)
	hi[len(hi)-1]++
	it, err := t.b.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for ok := it.First(); ok && len(keys) < limit; ok = it.Next() {
		keys = append(keys, append([]byte(nil), it.Key()...))
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	out := make([]Leased, 0, len(keys))
	for _, k := range keys {
		id := idFromTail(k)
		r, err := t.get(id)
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
		if err := t.b.Set(jobKey(t.kb[:0], id), r.encode(), nil); err != nil {
			return nil, err
		}
		if err := t.b.Delete(k, nil); err != nil {
			return nil, err
		}
		if !t.e.lean {
			if err := t.set(runningKey(append(t.kb[:0], pRunning), exp, id)); err != nil {
				return nil, err
			}
			if err := t.b.Delete(stateKey(append(t.kb[:0], pState), stAvailable, id), nil); err != nil {
				return nil, err
			}
		}
		if err := t.set(stateKey(append(t.kb[:0], pState), stRunning, id)); err != nil {
			return nil, err
		}
		out = append(out, Leased{ID: id, Token: r.LeaseToken})
	}
	return out, nil
}

func (t *pebbleTx) Complete(id int64, token string, now int64) (bool, error) {
	r, err := t.get(id)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
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
	if err := t.b.Set(jobKey(t.kb[:0], id), r.encode(), nil); err != nil {
		return false, err
	}
	if !t.e.lean {
		if err := t.b.Delete(runningKey(append(t.kb[:0], pRunning), oldExp, id), nil); err != nil {
			return false, err
		}
	}
	if err := t.b.Delete(stateKey(append(t.kb[:0], pState), stRunning, id), nil); err != nil {
		return false, err
	}
	if err := t.set(stateKey(append(t.kb[:0], pState), stCompleted, id)); err != nil {
		return false, err
	}
	if t.e.lean {
		return true, nil
	}
	return true, t.set(finalKey(append(t.kb[:0], pFinal), now, id))
}
