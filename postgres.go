package drover

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/maintenance"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
)

// PostgresOptions tune OpenPostgres and NewPostgres. The zero value is
// the default.
type PostgresOptions struct {
	// Schema holds Drover's tables (created when missing); empty means the
	// connection's search_path. OpenPostgres only: with NewPostgres the
	// pool's search_path decides.
	Schema string
	// NoMigrate skips applying migrations; the schema must be current
	// (see `drover migrate`).
	NoMigrate bool
	// MaxArgsBytes limits the encoded size of job args (and outputs);
	// zero means 1 MiB.
	MaxArgsBytes int
	// NodeID names this process among the nodes (servers and programs)
	// that share the database, in leader election; empty means host-pid.
	NodeID string
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
}

// OpenPostgres connects to the PostgreSQL database at url and returns a
// Store on it that many processes can share: servers, and Go programs
// with their own clients. Maintenance (promoting due jobs, rescuing
// expired leases, pruning) runs in one of them at a time, elected through
// the database; each is woken within milliseconds when another inserts
// jobs. Migrations are applied unless opts.NoMigrate.
func OpenPostgres(ctx context.Context, url string, opts *PostgresOptions) (*Store, error) {
	o := pgOptions(opts)
	pg, err := pgstore.Open(ctx, url, o)
	if err != nil {
		return nil, err
	}
	return newPostgresStore(pg, opts)
}

// NewPostgres is OpenPostgres over the caller's pool, which the caller
// closes after the Store. Use it to enqueue in your own transactions with
// Client.InsertTx on the same database.
func NewPostgres(ctx context.Context, pool *pgxpool.Pool, opts *PostgresOptions) (*Store, error) {
	pg, err := pgstore.New(ctx, pool, pgOptions(opts))
	if err != nil {
		return nil, err
	}
	return newPostgresStore(pg, opts)
}

func pgOptions(opts *PostgresOptions) pgstore.Options {
	if opts == nil {
		opts = &PostgresOptions{}
	}
	return pgstore.Options{Schema: opts.Schema, NoMigrate: opts.NoMigrate, NodeID: nodeID(opts.NodeID), Logger: opts.Logger}
}

func nodeID(id string) string {
	if id != "" {
		return id
	}
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

func newPostgresStore(pg *pgstore.Store, opts *PostgresOptions) (*Store, error) {
	if opts == nil {
		opts = &PostgresOptions{}
	}
	eng, err := engine.New(engine.Config{Store: pg, Limits: job.Limits{MaxArgsBytes: opts.MaxArgsBytes}, Logger: opts.Logger})
	if err != nil {
		pg.Close()
		return nil, err
	}
	cl, err := maintenance.StartCluster(eng, pg, nodeID(opts.NodeID), opts.Logger)
	if err != nil {
		pg.Close()
		return nil, err
	}
	return &Store{s: pg, eng: eng, pg: pg, cluster: cl}, nil
}

// InsertTx enqueues one job inside tx, a transaction on the Store's
// PostgreSQL database: the job exists exactly when tx commits, and is
// gone if tx rolls back. A refused insert (a validation error) leaves tx
// usable. It fails on the embedded store.
func (c *Client) InsertTx(ctx context.Context, tx pgx.Tx, args JobArgs, opts *InsertOpts) (*InsertResult, error) {
	res, err := c.InsertManyTx(ctx, tx, []InsertManyParams{{Args: args, Opts: opts}})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// InsertManyTx enqueues jobs inside tx, all or none: InsertMany within the
// caller's transaction (see InsertTx).
func (c *Client) InsertManyTx(ctx context.Context, tx pgx.Tx, params []InsertManyParams) ([]*InsertResult, error) {
	if c.st.pg == nil {
		return nil, fmt.Errorf("drover: InsertTx needs a PostgreSQL store (OpenPostgres or NewPostgres): %w", job.ErrInvalidState)
	}
	specs, err := specsOf(params)
	if err != nil {
		return nil, err
	}
	res, err := c.eng.EnqueueVia(ctx, func(ctx context.Context, p store.InsertParams) ([]store.InsertResult, error) {
		return c.st.pg.InsertTx(ctx, tx, p)
	}, specs...)
	if err != nil {
		return nil, err
	}
	return insertResults(res), nil
}

// closeCluster stops the node's listener and resigns its lead.
func (s *Store) closeCluster() {
	if s.cluster != nil {
		s.cluster.Stop(5 * time.Second)
	}
}
