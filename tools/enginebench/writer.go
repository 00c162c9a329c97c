package main

import (
	"sync/atomic"
)

// writer is the group-commit shape of sqlitestore's writer goroutine: every
// request goes to one goroutine, which takes whatever is waiting (up to
// maxBatch), runs it in one transaction (each request inside its own
// savepoint where the engine has them), commits once with one fsync and
// only then answers every caller.
type writer struct {
	eng        Engine
	reqs       chan *request
	quit       chan struct{}
	done       chan struct{}
	maxBatch   int
	savepoints bool

	commits atomic.Int64
	ops     atomic.Int64
}

type request struct {
	fn   func(Tx) error
	err  error
	done chan struct{}
}

func newWriter(eng Engine, maxBatch int, savepoints bool) *writer {
	w := &writer{
		eng:        eng,
		reqs:       make(chan *request, 8192),
		quit:       make(chan struct{}),
		done:       make(chan struct{}),
		maxBatch:   maxBatch,
		savepoints: savepoints,
	}
	go w.run()
	return w
}

// do runs fn in the next group transaction and returns once it is durable.
func (w *writer) do(fn func(Tx) error) error {
	r := &request{fn: fn, done: make(chan struct{})}
	w.reqs <- r
	<-r.done
	return r.err
}

func (w *writer) stop() {
	close(w.quit)
	<-w.done
}

func (w *writer) run() {
	defer close(w.done)
	batch := make([]*request, 0, w.maxBatch)
	for {
		select {
		case r := <-w.reqs:
			batch = append(batch[:0], r)
		case <-w.quit:
			return
		}
	fill:
		for len(batch) < w.maxBatch {
			select {
			case r := <-w.reqs:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.commit(batch)
	}
}

func (w *writer) commit(batch []*request) {
	multi := w.savepoints && len(batch) > 1
	err := w.eng.Update(func(tx Tx) error {
		for _, r := range batch {
			if multi {
				if err := tx.Savepoint(); err != nil {
					return err
				}
			}
			r.err = r.fn(tx)
			if multi {
				if err := tx.Release(r.err != nil); err != nil {
					return err
				}
			} else if r.err != nil {
				// Without savepoints one failure spoils the whole group.
				return r.err
			}
		}
		return nil
	})
	for _, r := range batch {
		if err != nil && r.err == nil {
			r.err = err
		}
		close(r.done)
	}
	w.commits.Add(1)
	w.ops.Add(int64(len(batch)))
}
