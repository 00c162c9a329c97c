package maintenance

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/store/pgstore"
)

// Cluster runs one node's share of a PostgreSQL deployment: a listener
// that wakes this node's waiting lease calls when another node makes jobs
// available, and the election that decides which node runs maintenance.
// Services attached to it run their tasks only while this node leads, and
// are kicked the moment it gains the lead.
type Cluster struct {
	elector *pgstore.Elector
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu   sync.Mutex
	svcs []*Service
}

// StartCluster starts the listener and the election for node id on pg,
// waking eng's waiters. Stop it before closing pg.
func StartCluster(eng *engine.Engine, pg *pgstore.Store, id string, log *slog.Logger) (*Cluster, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &Cluster{}
	el, err := pgstore.NewElector(pg, pgstore.ElectorOptions{
		ID:     id,
		Logger: log,
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
	if err != nil {
		return nil, err
	}
	c.elector = el
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		el.Run(ctx)
	}()
	go func() {
		defer c.wg.Done()
		_ = pg.Listen(ctx, eng.Notify)
	}()
	return c, nil
}

// Attach gates svcs on this node's leadership.
func (c *Cluster) Attach(svcs ...*Service) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range svcs {
		s.SetGate(c.elector.IsLeader)
		c.svcs = append(c.svcs, s)
	}
}

// IsLeader reports whether this node runs maintenance now.
func (c *Cluster) IsLeader() bool { return c.elector.IsLeader() }

// Stop resigns the lead (so another node takes over at once), stops the
// listener and waits for both, at most timeout.
func (c *Cluster) Stop(timeout time.Duration) {
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
	}
}
