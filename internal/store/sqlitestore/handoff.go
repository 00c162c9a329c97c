package sqlitestore

import (
	"context"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Hand-off: leasing for a waiting worker in the transaction that makes a
// job available.
//
// A lease call that finds nothing waits. Without help, the job that ends
// its wait costs two group commits before it reaches the worker: the
// insert's, after which the waiter is woken, and then the waiter's own
// lease. Each is a write of the WAL and an fsync, and each waits for the
// writer's commit in progress. Under a steady trickle of single jobs (W4),
// the second commit was a third of all commits and most of the time
// between an enqueue and its start.
//
// So a waiting call parks here as well. When a group transaction has made
// jobs available on a queue (its requests' count deltas say so), the
// writer appends a lease for the oldest parked calls on that queue to the
// same transaction, before its commit. The job is durable as leased when
// the insert is acknowledged, and the parked call gets it as soon as the
// commit returns. The lease is the ordinary one, in fetch order, so a
// parked call gets the best job available, not necessarily the new one.

// A parked call moves from waiting (in Store.parked) to taken (the writer
// runs its lease) to done (Done closed), or back to waiting when its
// lease found nothing.
const (
	parkWaiting = iota
	parkTaken
	parkDone
)

// parked is one parked lease call. Its fields after now are guarded by
// the store's parkMu, except jobs, which only the writer touches while the
// call is taken.
type parked struct {
	s   *Store
	p   store.LeaseParams
	now func() time.Time

	state     int
	cancelled bool
	done      chan struct{}
	jobs      []*job.Job
	err       error
}

var _ store.Parker = (*Store)(nil)

// Park implements store.Parker. The try and the registration are one
// write request, so they are atomic with respect to every other write:
// a job made available after the try is handed to this call.
func (s *Store) Park(ctx context.Context, p store.LeaseParams, now func() time.Time) (store.ParkedLease, error) {
	pk := &parked{s: s, p: p, now: now, done: make(chan struct{})}
	if p.Limit <= 0 || len(p.Queues) == 0 {
		// Nothing can be leased for it: it stays waiting, unlisted,
		// until withdrawn.
		return pk, nil
	}
	var leased []*job.Job // by the try, not by a hand-off
	err := s.write(ctx, func(w *wtx) error {
		lp := p
		lp.Now = now()
		jobs, err := w.lease(lp, nil)
		if err != nil {
			return err
		}
		if len(jobs) > 0 {
			leased = jobs
			return nil
		}
		s.parkMu.Lock()
		s.parked = append(s.parked, pk)
		s.parkMu.Unlock()
		return nil
	})
	if err != nil {
		// The write failed: whatever it leased or parked does not stand.
		pk.Cancel() //nolint:errcheck // reporting err; a failed write leased nothing
		return nil, err
	}
	if len(leased) > 0 {
		pk.jobs = leased
		pk.state = parkDone
		close(pk.done)
	}
	return pk, nil
}

// Done implements store.ParkedLease.
func (pk *parked) Done() <-chan struct{} { return pk.done }

// Result implements store.ParkedLease.
func (pk *parked) Result() ([]*job.Job, error) {
	select {
	case <-pk.done:
		return pk.jobs, pk.err
	default:
		return nil, nil
	}
}

// Cancel implements store.ParkedLease.
func (pk *parked) Cancel() ([]*job.Job, error) {
	s := pk.s
	s.parkMu.Lock()
	switch pk.state {
	case parkWaiting:
		s.unpark(pk)
		pk.state = parkDone
		pk.cancelled = true
		close(pk.done)
		s.parkMu.Unlock()
		return nil, nil
	case parkTaken:
		// The writer holds it: it delivers whatever it leased, and does
		// not park it again.
		pk.cancelled = true
	}
	s.parkMu.Unlock()
	<-pk.done
	return pk.jobs, pk.err
}

// unpark removes pk from the waiting list. The caller holds parkMu.
func (s *Store) unpark(pk *parked) {
	for i, x := range s.parked {
		if x == pk {
			s.parked = append(s.parked[:i], s.parked[i+1:]...)
			return
		}
	}
}

// handOffs returns lease requests for the parked calls that the requests
// of batch (run, not yet committed) made jobs available for: at most as
// many calls per queue as jobs there, oldest first. They run in the same
// transaction.
func (s *Store) handOffs(batch []*op) []*op {
	s.parkMu.Lock()
	none := len(s.parked) == 0
	s.parkMu.Unlock()
	if none {
		return nil
	}
	var gained map[string]int
	for _, o := range batch {
		if o.err != nil {
			continue
		}
		for _, d := range o.deltas {
			if d.state == job.StateAvailable {
				if gained == nil {
					gained = map[string]int{}
				}
				gained[d.queue] += d.n
			}
		}
	}
	if len(gained) == 0 {
		return nil
	}
	left := make(map[string]int, len(gained))
	for q, n := range gained {
		if n > 0 && !s.paused[q] {
			left[q] = n
		}
	}
	if len(left) == 0 {
		return nil
	}
	var ops []*op
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	keep := s.parked[:0]
	for _, pk := range s.parked {
		q := firstWith(pk.p.Queues, left)
		if q == "" {
			keep = append(keep, pk)
			continue
		}
		left[q] -= pk.p.Limit
		pk.state = parkTaken
		ops = append(ops, s.parkedOp(pk, gained))
	}
	clear(s.parked[len(keep):])
	s.parked = keep
	return ops
}

// firstWith returns the first of queues with jobs left to hand off.
func firstWith(queues []string, left map[string]int) string {
	for _, q := range queues {
		if left[q] > 0 {
			return q
		}
	}
	return ""
}

// parkedOp is the write request that leases for pk.
func (s *Store) parkedOp(pk *parked, gained map[string]int) *op {
	o := &op{ctx: context.Background(), done: make(chan struct{}), kind: opNormal, parked: pk}
	o.fn = func(w *wtx) error {
		p := pk.p
		p.Now = pk.now()
		jobs, err := w.lease(p, gained)
		pk.jobs = jobs
		return err
	}
	return o
}

// settleParked ends the writer's hold on o's parked call once o's group
// is committed or failed: it delivers the leased jobs, or the error, or
// parks the call again, at the head, when its lease found nothing.
func (s *Store) settleParked(o *op) {
	pk := o.parked
	if o.err != nil {
		pk.jobs = nil
	}
	s.parkMu.Lock()
	defer s.parkMu.Unlock()
	if len(pk.jobs) == 0 && o.err == nil && !pk.cancelled && !s.closed.Load() {
		pk.state = parkWaiting
		s.parked = append([]*parked{pk}, s.parked...)
		return
	}
	pk.err = o.err
	pk.state = parkDone
	close(pk.done)
}
