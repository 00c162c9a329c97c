package drover

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/remote"
)

// RemoteOptions tune OpenRemote.
type RemoteOptions struct {
	// Token is the bearer token for the server: producer scope to insert,
	// worker scope to work, read to Get, admin to Cancel and Retry (or
	// one admin token). Empty sends none, for a server on loopback
	// without tokens.
	Token string
	// TLS configures https:// connections; nil means the system's roots.
	TLS *tls.Config
	// HTTPClient, when set, carries the calls instead of Drover's own
	// HTTP/2 client. It must speak HTTP/2 (h2c for http:// URLs).
	HTTPClient *http.Client
	// Logger receives reconnects and refused settles; nil means
	// slog.Default().
	Logger *slog.Logger
	// Compress gzips large messages (16 KiB and more) both ways: worth
	// it on a slow link, a waste of CPU on a fast one.
	Compress bool
}

// OpenRemote returns a Store on the Drover server at url (for example
// "http://127.0.0.1:8080"). A Client on it inserts with the server's
// gRPC JobService, and works its queues over one Work stream per queue
// on a shared HTTP/2 connection: the server pushes leased jobs as workers
// free up, and completions, failures and heartbeats flow back on the same
// stream, each acknowledged. The same Worker code runs as it does on a
// local store; what differs:
//
//   - The server runs maintenance (promotion, lease rescue, pruning), so
//     Config.NoMaintenance and Config.Retention do not apply.
//   - A stream that breaks is reconnected with backoff; settles not yet
//     acknowledged are sent again (lease tokens make that safe), and a
//     job pushed at the instant of the break is re-delivered after its
//     lease expires.
//   - InsertTx needs PostgreSQL and is refused.
//
// No call is made until the first insert or Start.
func OpenRemote(url string, opts *RemoteOptions) (*Store, error) {
	if opts == nil {
		opts = &RemoteOptions{}
	}
	conn, err := remote.Dial(url, remote.Options{Token: opts.Token, TLS: opts.TLS, HTTPClient: opts.HTTPClient, Logger: opts.Logger, Compress: opts.Compress})
	if err != nil {
		return nil, fmt.Errorf("drover: OpenRemote: %w", err)
	}
	return &Store{remote: conn}, nil
}

// Open opens the store that target names, so that where jobs live is a
// setting rather than code: "http://..." or "https://..." is a Drover
// server (OpenRemote, with opts.Remote), "postgres://..." or
// "postgresql://..." is PostgreSQL (OpenPostgres, with opts.Postgres),
// anything else is the embedded store's data directory (OpenEmbedded,
// with opts.Embedded).
func Open(ctx context.Context, target string, opts *OpenOptions) (*Store, error) {
	if opts == nil {
		opts = &OpenOptions{}
	}
	switch {
	case target == "":
		return nil, errors.New("drover: Open: no target: give a data directory, a postgres:// URL or a server's http(s):// URL")
	case strings.HasPrefix(target, "http://"), strings.HasPrefix(target, "https://"):
		return OpenRemote(target, opts.Remote)
	case strings.HasPrefix(target, "postgres://"), strings.HasPrefix(target, "postgresql://"):
		return OpenPostgres(ctx, target, opts.Postgres)
	default:
		return OpenEmbedded(target, opts.Embedded)
	}
}

// OpenOptions are the options of Open, one per kind of store; only the
// kind that the target names is used.
type OpenOptions struct {
	Embedded *EmbeddedOptions
	Postgres *PostgresOptions
	Remote   *RemoteOptions
}

// startRemote opens queue's Work stream and grants it slots jobs; each
// job that finishes grants one more.
func (c *Client) startRemote(queue string, slots int) error {
	var sess *remote.Session
	sess, err := c.st.remote.Work(remote.WorkOptions{
		Queues: []string{queue}, LeaseFor: c.cfg.LeaseFor, Worker: c.cfg.ID,
		OnJobs: func(jobs []*job.Job) { c.accept(sess, jobs) },
		// As a local fetcher gathers slots (see gatherSlots).
		GrantBatch: (slots + 1) / 4,
	})
	if err != nil {
		return err
	}
	c.sessions = append(c.sessions, sess)
	c.fetchers.Add(1)
	go func() {
		defer c.fetchers.Done()
		<-c.fetchCtx.Done()
		// Stop: ask the server to push nothing more, and wait until it
		// says so, so that every job pushed is counted as running
		// before Stop waits for the running ones.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sess.Drain(ctx); err != nil {
			c.log.Warn("drain work stream", "queue", queue, "err", err)
		}
	}()
	sess.Grant(slots)
	return nil
}

// accept runs jobs pushed on sess. Jobs that come after Stop stopped
// fetching (a drain that timed out) are handed back at once.
func (c *Client) accept(sess *remote.Session, jobs []*job.Job) {
	c.mu.Lock()
	stopping := c.noMoreRuns
	if !stopping {
		c.running.Add(len(jobs))
	}
	c.mu.Unlock()
	if stopping {
		for _, j := range jobs {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := c.st.remote.GiveBack(ctx, j.ID, j.LeaseToken); err != nil {
					c.log.Warn("give back lease", "job_id", j.ID, "err", err)
				}
			}()
		}
		return
	}
	for _, j := range jobs {
		go func() {
			defer c.running.Done()
			c.execute(sess, j)
			sess.Grant(1)
		}()
	}
}

// closeSessions ends the Work streams once everything is settled.
func (c *Client) closeSessions() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range c.sessions {
		s.Close(ctx)
	}
}
