package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/droverhq/drover/internal/job"
)

// ElectorOptions tune an Elector.
type ElectorOptions struct {
	// Name is the role that nodes compete for: one row of drover_leader.
	// Empty means "maintenance".
	Name string
	// ID names this node and is required. It must be unique among the
	// nodes that share the database: two electors with one ID would both
	// believe they lead.
	ID string
	// TTL is how long a term lasts without renewal, in database time. A
	// dead leader is replaced after at most TTL plus Renew. Zero means 15s.
	TTL time.Duration
	// Renew is how often the leader renews its term and the other nodes
	// try to take the role. Zero means TTL/3; it must stay below TTL
	// minus the safety margin (TTL/10), or a healthy leader would lapse
	// between renewals.
	Renew time.Duration
	// Logger receives gains, losses and errors; nil means slog.Default().
	Logger *slog.Logger
	// OnChange, when set, is called from the Run goroutine each time this
	// node gains (true) or loses (false) the role. Run waits for it, so it
	// should return quickly; IsLeader stays accurate meanwhile.
	OnChange func(leader bool)
}

// Elector defaults and limits.
const (
	defaultLeaderName = "maintenance"
	defaultLeaderTTL  = 15 * time.Second
	// resignTimeout bounds the DELETE that hands the role over on stop: a
	// database that does not answer by then lets the term expire instead.
	resignTimeout = 5 * time.Second
)

// Elector campaigns for one role through the drover_leader table, so that
// at most one node at a time runs what the role guards (maintenance).
//
// The database decides who holds a term, by its own clock (now()), so
// nodes' clocks never need to agree. The term a node believes it holds is
// measured on its local monotonic clock from the moment it sent its last
// successful claim, which the database can only have stamped later: the
// local term therefore ends before the database's, and a margin (TTL/10)
// covers clock-rate drift. A node cut off from the database stops
// believing it leads before any other node can be elected.
//
// An Elector is safe for concurrent use, but only one Run may campaign at
// a time.
type Elector struct {
	s        *Store
	name     string
	id       string
	ttl      time.Duration
	renew    time.Duration
	term     time.Duration // ttl minus the safety margin: the local term
	log      *slog.Logger
	onChange func(leader bool)

	running atomic.Bool
	// kick asks Run to claim now rather than at its next renewal.
	kick chan struct{}
	// epoch anchors deadline on the monotonic clock.
	epoch time.Time
	// deadline is when, in nanoseconds since epoch, this node stops
	// believing it leads; 0 when it does not lead. IsLeader reads it
	// without the Run goroutine, so a stalled Run cannot keep a stale true.
	deadline atomic.Int64
}

// NewElector returns an elector for opts.Name on the store's database. It
// returns a *job.ValidationError when opts.ID is empty or the durations do
// not leave the leader time to renew. Call Run to campaign.
func NewElector(s *Store, opts ElectorOptions) (*Elector, error) {
	if s == nil {
		return nil, &job.ValidationError{Field: "store", Message: "must not be nil"}
	}
	if opts.ID == "" {
		return nil, &job.ValidationError{Field: "id", Message: "must not be empty"}
	}
	if opts.Name == "" {
		opts.Name = defaultLeaderName
	}
	if opts.TTL == 0 {
		opts.TTL = defaultLeaderTTL
	}
	// The database keeps microseconds; a shorter term cannot be stored.
	if opts.TTL < time.Millisecond {
		return nil, &job.ValidationError{Field: "ttl", Message: "must be at least 1ms"}
	}
	if opts.Renew == 0 {
		opts.Renew = opts.TTL / 3
	}
	term := opts.TTL - opts.TTL/10
	if opts.Renew <= 0 || opts.Renew >= term {
		return nil, &job.ValidationError{Field: "renew", Message: fmt.Sprintf("must be positive and below %s (ttl less a tenth)", term)}
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Elector{
		kick:     make(chan struct{}, 1),
		s:        s,
		name:     opts.Name,
		id:       opts.ID,
		ttl:      opts.TTL,
		renew:    opts.Renew,
		term:     term,
		log:      log.With(slog.String("role", opts.Name), slog.String("node_id", opts.ID)),
		onChange: opts.OnChange,
		epoch:    time.Now(),
	}, nil
}

// IsLeader reports whether this node holds the role now: its last claim
// succeeded and its local term has not run out. It is safe to call from
// any goroutine and never touches the database.
func (e *Elector) IsLeader() bool {
	d := e.deadline.Load()
	return d != 0 && e.since() < d
}

// since returns the monotonic time since e.epoch, never 0 so that 0 can
// mean "no term".
func (e *Elector) since() int64 {
	return max(int64(time.Since(e.epoch)), 1)
}

// Leader returns who holds the role now and until when, in database time;
// id is "" when nobody holds a live term. Errors reaching the database
// match job.ErrUnavailable.
func (e *Elector) Leader(ctx context.Context) (id string, expires time.Time, err error) {
	if err := e.s.live(); err != nil {
		return "", time.Time{}, err
	}
	err = e.s.pool.QueryRow(ctx, `SELECT leader_id, expires_at FROM drover_leader
		WHERE name = $1 AND expires_at > now()`, e.name).Scan(&id, &expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, fmt.Errorf("read leader of %q: %w", e.name, unavailable(err))
	}
	return id, expires.UTC(), nil
}

// claimSQL takes the role when it is free or expired, or renews it when
// this node holds it, in one statement, so that two nodes can never both
// succeed. A row comes back only when this node holds the role afterwards.
// elected_at keeps the start of an unbroken term across renewals.
const claimSQL = `INSERT INTO drover_leader AS l (name, leader_id, elected_at, expires_at)
	VALUES ($1, $2, now(), now() + $3::bigint * interval '1 microsecond')
	ON CONFLICT (name) DO UPDATE SET
		leader_id  = excluded.leader_id,
		elected_at = CASE WHEN l.leader_id = excluded.leader_id AND l.expires_at >= now()
		                  THEN l.elected_at ELSE excluded.elected_at END,
		expires_at = excluded.expires_at
	WHERE l.leader_id = excluded.leader_id OR l.expires_at < now()
	RETURNING leader_id`

// Run campaigns until ctx is done: it claims the role every Renew, which
// renews the term while this node holds it. Errors are logged and retried
// at the same pace. When ctx is done Run resigns (it deletes the row if
// this node holds it, so another node takes over at once instead of after
// the TTL; at most 5s is spent trying) and returns. A second Run while one
// campaigns returns at once.
func (e *Elector) Run(ctx context.Context) {
	// Two loops would overwrite each other's term.
	if e.running.Swap(true) {
		e.log.Error("leader: Run called while another Run campaigns; ignored")
		return
	}
	defer e.running.Store(false)
	leading := false // what OnChange last said
	setLeading := func(now bool, msg string) {
		if now == leading {
			return
		}
		leading = now
		e.log.Info(msg)
		if e.onChange != nil {
			e.onChange(now)
		}
	}
	defer func() {
		// Stop believing before the row goes: once it is deleted another
		// node may be elected at once.
		e.deadline.Store(0)
		setLeading(false, "leader: stepping down")
		e.resign(ctx)
	}()

	failures := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.kick:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		start := time.Now()
		err := e.claim(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && failures == 0:
			e.log.Warn("leader: claim failed; retrying", slog.Duration("every", e.renew), slog.Any("error", err))
			failures++
		case err != nil:
			e.log.Debug("leader: claim failed again", slog.Int("failures", failures), slog.Any("error", err))
			failures++
		case failures > 0:
			e.log.Info("leader: claims succeed again", slog.Int("failures", failures))
			failures = 0
		}
		if e.IsLeader() {
			setLeading(true, "leader: gained the role")
		} else {
			setLeading(false, "leader: lost the role")
		}
		// The next claim is due Renew after this one started, so a slow
		// claim does not stretch the period, and a fast failure waits a
		// full period rather than spinning.
		timer.Reset(max(e.renew-time.Since(start), e.renew/10))
	}
}

// claim tries once to take or renew the role and records the outcome in
// e.deadline. It gives up at the end of the current local term, so that
// Run reports a loss on time even when the database hangs.
func (e *Elector) claim(ctx context.Context) error {
	if err := e.s.live(); err != nil {
		e.deadline.Store(0)
		return err
	}
	// The local term is counted from before the send: the database stamps
	// expires_at no earlier than it receives the statement.
	sent := e.since()
	timeout := e.renew
	if d := e.deadline.Load(); d != 0 && d > sent {
		timeout = min(timeout, time.Duration(d-sent))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var holder string
	err := e.s.pool.QueryRow(ctx, claimSQL, e.name, e.id, e.ttl.Microseconds()).Scan(&holder)
	switch {
	case err == nil:
		e.deadline.Store(sent + int64(e.term))
		return nil
	case errors.Is(err, pgx.ErrNoRows):
		// Another node holds a live term.
		e.deadline.Store(0)
		return nil
	default:
		// Keep the current term: it runs out by itself (IsLeader checks
		// it), and a later renewal within it keeps the role.
		if d := e.deadline.Load(); d != 0 && e.since() >= d {
			e.deadline.Store(0)
		}
		return fmt.Errorf("claim %q: %w", e.name, unavailable(err))
	}
}

// resign deletes the row when this node holds it, so that the next node
// is elected at its next try rather than when the term expires. It runs
// after ctx is done, under a fresh, bounded context.
func (e *Elector) resign(ctx context.Context) {
	if e.s.live() != nil {
		return // the term will expire by itself
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resignTimeout)
	defer cancel()
	tag, err := e.s.pool.Exec(ctx, `DELETE FROM drover_leader WHERE name = $1 AND leader_id = $2`, e.name, e.id)
	if err != nil {
		e.log.Warn("leader: resign failed; the term will expire by itself", slog.Any("error", unavailable(err)))
		return
	}
	if tag.RowsAffected() > 0 {
		e.log.Info("leader: resigned")
		// Tell the other nodes' listeners, so that their electors claim
		// now rather than at their next renewal (see Kick).
		if _, err := e.s.pool.Exec(ctx, `SELECT pg_notify($1, $2)`, e.s.channel, resignedPayload+"|"+e.s.nodeID+"|"+e.name); err != nil {
			e.log.Debug("leader: announce the resignation", slog.Any("error", err))
		}
	}
}

// resignedPayload starts the notification of a resigned leader.
const resignedPayload = "resigned"

// Kick makes Run try to claim the role at once, for example because the
// leader just resigned. It never blocks.
func (e *Elector) Kick() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}
