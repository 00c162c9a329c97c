package sqlitestore

import (
	"context"
	"fmt"

	"github.com/droverhq/drover/internal/job"
)

// op is one write request: fn runs inside the group transaction on the
// writer goroutine. Its effects on the in-memory state are staged in w and
// applied only after the commit is durable.
type op struct {
	ctx  context.Context
	fn   func(w *wtx) error
	err  error
	done chan struct{}
	// kind says how the op runs: with a savepoint of its own (opNormal),
	// or deferred into the group's merged plain inserts (opPlain, see
	// flushPlain), which need none: an error there fails the whole batch.
	kind opKind

	deltas []countDelta
	after  []func()
	// parked, when set, is the parked lease call this request leases
	// for (see handoff.go).
	parked *parked
}

type countDelta struct {
	queue string
	state job.State
	n     int
}

// wtx is what an op's fn may use: the prepared statements and the staging
// of in-memory changes.
type wtx struct {
	s   *Store
	cur *op
	// ctx is the context of every statement in the group transaction. It
	// is never the caller's: a caller that gives up while its statement
	// runs would make the driver interrupt it, and SQLite then rolls back
	// the whole transaction, taking the other callers' work with it. A
	// caller's context is checked before its request starts instead.
	ctx context.Context
	// pending are the plain inserts deferred so far in this group.
	pending []pendingPlain
}

// move records that a job of queue went from one state to another; a zero
// from (or to) means it was inserted (or deleted).
func (w *wtx) move(queue string, from, to job.State) {
	if from == to {
		return
	}
	if from != "" {
		w.cur.deltas = append(w.cur.deltas, countDelta{queue, from, -1})
	}
	if to != "" {
		w.cur.deltas = append(w.cur.deltas, countDelta{queue, to, 1})
	}
}

// after runs f on the writer goroutine once the op's commit is durable.
func (w *wtx) after(f func()) { w.cur.after = append(w.cur.after, f) }

// write runs fn in the next group transaction and returns once that
// transaction is durable (or failed).
func (s *Store) write(ctx context.Context, fn func(w *wtx) error) error {
	return s.submit(ctx, fn, opNormal)
}

type opKind int

const (
	opNormal opKind = iota
	opPlain
)

func (s *Store) submit(ctx context.Context, fn func(w *wtx) error, kind opKind) error {
	if s.closed.Load() {
		return fmt.Errorf("store closed: %w", job.ErrUnavailable)
	}
	if err := s.failure(); err != nil {
		return err
	}
	o := &op{ctx: ctx, fn: fn, done: make(chan struct{}), kind: kind}
	select {
	case s.reqs <- o:
	case <-s.quit:
		return fmt.Errorf("store closed: %w", job.ErrUnavailable)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-o.done:
		return o.err
	case <-s.done:
		// The writer exited; it may or may not have taken o first.
		select {
		case <-o.done:
			return o.err
		default:
			return fmt.Errorf("store closed: %w", job.ErrUnavailable)
		}
	}
}

// run is the writer goroutine: it takes every waiting request, commits
// them together and answers them all.
func (s *Store) run() {
	defer close(s.done)
	batch := make([]*op, 0, s.opts.MaxBatch)
	for {
		select {
		case o := <-s.reqs:
			batch = append(batch[:0], o)
		case <-s.quit:
			// Finish what was queued before Close, then stop.
			for {
				batch = batch[:0]
				for len(batch) < s.opts.MaxBatch {
					select {
					case o := <-s.reqs:
						batch = append(batch, o)
						continue
					default:
					}
					break
				}
				if len(batch) == 0 {
					return
				}
				s.commit(batch)
			}
		}
	fill:
		for len(batch) < s.opts.MaxBatch {
			select {
			case o := <-s.reqs:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		s.commit(batch)
	}
}

// commit runs batch in one transaction.
func (s *Store) commit(batch []*op) {
	defer func() {
		for _, o := range batch {
			close(o.done)
			if o.parked != nil {
				s.settleParked(o)
			}
		}
	}()
	if err := s.failure(); err != nil {
		for _, o := range batch {
			o.err = err
		}
		return
	}
	ctx := context.Background()
	c := s.wconn
	st := s.stmts
	if _, err := st.begin.ExecContext(ctx); err != nil {
		s.failBatch(batch, fmt.Errorf("begin: %w", err))
		return
	}
	w := &wtx{s: s, ctx: context.Background()}
	multi := len(batch) > 1
	ok := 0
	requested := len(batch)
	for i := 0; ; i++ {
		if i == requested {
			// Every request has run: lease in this same transaction for
			// the parked calls whose queues it gave jobs to.
			if err := w.flushPlain(); err != nil {
				s.abandon(batch, err)
				return
			}
			if h := s.handOffs(batch); len(h) > 0 {
				batch = append(batch, h...)
				multi = true
			}
		}
		if i >= len(batch) {
			break
		}
		o := batch[i]
		if err := o.ctx.Err(); err != nil {
			o.err = err
			continue
		}
		if o.kind != opPlain {
			// Deferred inserts run first, so ids follow request order.
			if err := w.flushPlain(); err != nil {
				s.abandon(batch, err)
				return
			}
		}
		savepoint := multi && o.kind == opNormal
		if savepoint {
			if _, err := st.savepoint.ExecContext(ctx); err != nil {
				o.err = fmt.Errorf("savepoint: %w", err)
				continue
			}
		}
		w.cur = o
		o.err = o.fn(w)
		if o.err != nil {
			o.deltas, o.after = nil, nil
			if isIOError(o.err) || isFull(o.err) {
				// The disk failed or filled up mid-request, and SQLite
				// may have rolled back the whole transaction: nothing in
				// it stands. After an I/O error nothing more can be
				// trusted either; a full disk fails only this batch.
				c.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // reporting o.err
				if isIOError(o.err) {
					s.poison(o.err)
				}
				s.failBatch(batch, o.err)
				return
			}
			if o.kind != opNormal && multi {
				// Without a savepoint the others' changes cannot be
				// kept apart from whatever SQLite undid: fail them all.
				c.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // reporting o.err
				s.failBatch(batch, o.err)
				return
			}
			if savepoint {
				_, rerr := st.rollbackTo.ExecContext(ctx)
				if rerr == nil {
					_, rerr = st.release.ExecContext(ctx)
				}
				if rerr != nil {
					// The transaction is in an unknown state: give it up.
					c.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // reporting rerr
					s.failBatch(batch, fmt.Errorf("roll back to savepoint: %w", rerr))
					return
				}
			}
			continue
		}
		ok++
		if savepoint {
			if _, err := st.release.ExecContext(ctx); err != nil {
				c.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // reporting err
				s.failBatch(batch, fmt.Errorf("release savepoint: %w", err))
				return
			}
		}
	}
	if err := w.flushPlain(); err != nil {
		s.abandon(batch, err)
		return
	}
	if ok == 0 {
		if _, err := c.ExecContext(ctx, "ROLLBACK"); err != nil {
			s.poison(fmt.Errorf("rollback: %w", err))
		}
		return
	}
	if _, err := st.commit.ExecContext(ctx); err != nil {
		c.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // reporting err
		if isFull(err) {
			// The WAL could not take the batch's frames: no commit
			// record reached the file, so nothing of it stands, and the
			// store works again once space is freed.
			s.failBatch(batch, err)
			return
		}
		// The commit may or may not have reached the disk. Refuse to
		// acknowledge anything more until the store is reopened and the
		// state rebuilt from what the disk really holds.
		s.poison(err)
		s.failBatch(batch, fmt.Errorf("commit: %w", err))
		return
	}
	if err := s.vfs.SyncErr(); err != nil {
		// An fsync failed during the commit: a checkpoint run by it could
		// not sync the database file. The batch is in the WAL, but an
		// fsync error leaves the state of the disk unknown, so it is not
		// acknowledged, nor is anything after it. The in-memory counts
		// are left as they were; the store must be reopened anyway.
		s.poison(err)
		s.failBatch(batch, err)
		return
	}
	s.commits.Add(1)
	s.requests.Add(int64(len(batch)))
	s.kickCheckpointer()
	s.mu.Lock()
	for _, o := range batch {
		if o.err != nil {
			continue
		}
		for _, d := range o.deltas {
			s.addCount(d.queue, d.state, d.n)
		}
	}
	s.mu.Unlock()
	for _, o := range batch {
		if o.err == nil {
			for _, f := range o.after {
				f()
			}
		}
	}
}

// abandon rolls the group back after an error that leaves it unknown
// which requests' changes stand, and fails them all.
func (s *Store) abandon(batch []*op, err error) {
	s.wconn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck // reporting err
	if isIOError(err) {
		s.poison(err)
	}
	for _, o := range batch {
		o.deltas, o.after = nil, nil
	}
	s.failBatch(batch, err)
}

// failBatch gives err to every request of batch that has no error of its
// own: requests that failed on their own changed nothing and keep their
// error; the others were not made durable. Every caller of the batch is
// answered with an error, none is acknowledged.
func (s *Store) failBatch(batch []*op, err error) {
	var werr error
	switch {
	case isFull(err):
		werr = fmt.Errorf("%w: the disk holding the data directory is full (%v); nothing was written, retry once space is freed", job.ErrStorageFull, err) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
	case s.failed.Load() != nil:
		werr = s.failure()
	default:
		werr = fmt.Errorf("%w: %v", job.ErrUnavailable, err) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
	}
	for _, o := range batch {
		if o.err == nil || isIOError(o.err) || isFull(o.err) {
			o.err = werr
		}
	}
}

func (s *Store) poison(err error) {
	s.failed.CompareAndSwap(nil, &err)
}
