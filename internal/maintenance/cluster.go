package maintenance

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/store/pgstore"
)

// Cluster runs one node's share of a PostgreSQL deployment: a listener
// that wakes this node's waiting lease calls when another node makes jobs
// available, and, while services are attached, the election that decides
// which node runs maintenance. Attached services run their tasks only
// while this node leads, and are kicked the moment it gains the lead.
//
// A node campaigns only while it has services to run: a process that
// opens the store without running maintenance (an insert-only program, or
// one whose clients all set NoMaintenance) must never win the role and
// leave the cluster without a promoter or rescuer.
type Cluster struct {
	pg  *pgstore.Store
	id  string
	log *slog.Logger

	listenCancel context.CancelFunc
	listenDone   chan struct{}

	mu       sync.Mutex
	svcs     []*Service
	elector  *pgstore.Elector
	elCancel context.CancelFunc
	elDone   chan struct{}
}

// StartCluster starts the listener for node id on pg, waking eng's
// waiters. Stop it before closing pg.
func StartCluster(eng *engine.Engine, pg *pgstore.Store, id string, log *slog.Logger) (*Cluster, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Cluster{pg: pg, id: id, log: log, listenDone: make(chan struct{})}
	// Check the election options now, so that a bad id fails at start.
	if _, err := c.newElector(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.listenCancel = cancel
	go func() {
		defer close(c.listenDone)
		_ = pg.ListenAll(ctx, eng.Notify, func(string) {
			c.mu.Lock()
			el := c.elector
			c.mu.Unlock()
			if el != nil {
				el.Kick()
			}
		})
	}()
	return c, nil
}

func (c *Cluster) newElector() (*pgstore.Elector, error) {
	return pgstore.NewElector(c.pg, pgstore.ElectorOptions{
		ID:     c.id,
		Logger: c.log,
		OnChange: func(leader bool) {
			if !leader {
				return
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, s := range c.svcs {
				s.Kick()
			}
		},
	})
}

// Attach gates svcs on this node's leadership and, if this node was not
// campaigning yet, starts its campaign.
func (c *Cluster) Attach(svcs ...*Service) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range svcs {
		s.SetGate(c.IsLeader)
		c.svcs = append(c.svcs, s)
	}
	if c.elector != nil || len(c.svcs) == 0 {
		return
	}
	el, err := c.newElector()
	if err != nil {
		c.log.Error("cannot campaign for maintenance", "err", err) // checked at start: not expected
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.elector, c.elCancel, c.elDone = el, cancel, make(chan struct{})
	done := c.elDone
	go func() {
		defer close(done)
		el.Run(ctx)
	}()
}

// Detach removes svcs; when none is left the node resigns the lead, so
// that another node with services takes over at once.
func (c *Cluster) Detach(svcs ...*Service) {
	c.mu.Lock()
	c.svcs = slices.DeleteFunc(c.svcs, func(s *Service) bool { return slices.Contains(svcs, s) })
	var cancel context.CancelFunc
	var done chan struct{}
	if len(c.svcs) == 0 && c.elector != nil {
		cancel, done = c.elCancel, c.elDone
		c.elector, c.elCancel, c.elDone = nil, nil, nil
	}
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// IsLeader reports whether this node runs maintenance now.
func (c *Cluster) IsLeader() bool {
	c.mu.Lock()
	el := c.elector
	c.mu.Unlock()
	return el != nil && el.IsLeader()
}

// Stop resigns the lead (so another node takes over at once), stops the
// listener and waits for both, at most timeout.
func (c *Cluster) Stop(timeout time.Duration) {
	c.mu.Lock()
	cancel, elDone := c.elCancel, c.elDone
	c.elector, c.elCancel, c.elDone = nil, nil, nil
	c.mu.Unlock()
	c.listenCancel()
	done := make(chan struct{})
	go func() {
		if cancel != nil {
			cancel()
			<-elDone
		}
		<-c.listenDone
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}
