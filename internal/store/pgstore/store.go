// Package pgstore is the PostgreSQL store: many Drover nodes (servers and
// Go programs) share one database, and the database does the coordination.
//
//   - Leases take the first available jobs in fetch order with FOR UPDATE
//     SKIP LOCKED over a partial index that matches that order, so nodes
//     never wait on each other's rows and no job is leased twice.
//   - Uniqueness is a partial unique index, so it holds across nodes.
//   - Lease tokens are checked in the UPDATE that settles a job, so a stale
//     worker on any node is refused.
//   - Inserts are multi-row statements, completions one statement per
//     batch; a plain insert or a batch of completions is one round trip.
//   - Inserts, promotions and resolved dependencies NOTIFY a channel that
//     every node LISTENs on (see Store.Listen), so an idle node wakes within
//     milliseconds.
//   - Maintenance runs on one node at a time, elected through the
//     drover_leader table (see Elector).
//
// Tables are named drover_* and live in the connection's search_path; Open
// can set the schema. Queries run through pgx's statement cache, so each
// is prepared once per connection (with PgBouncer in transaction mode, set
// default_query_exec_mode=exec in the URL).
package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover/internal/job"
)

// Options tune Open and New. The zero value is the default.
type Options struct {
	// Schema, when set, is where Drover's tables live: Open makes it every
	// connection's search_path (alone) and migrations create it. Ignored
	// by New, whose pool's own search_path decides.
	Schema string
	// NoMigrate skips applying migrations at open; the schema must then be
	// current already (see Migrate and `drover migrate`).
	NoMigrate bool
	// MaxConns caps Open's pool; zero means pool_max_conns from the URL,
	// else max(16, 4 × GOMAXPROCS).
	MaxConns int32
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
	// NodeID names this node in its notifications, so that its own
	// listener skips what its engine already knows; empty means a
	// random id.
	NodeID string
	// AnalyzeEvery is how often the store checks whether drover_jobs,
	// while young, needs its statistics refreshed (see analyze.go). Zero
	// means 1s; negative leaves statistics to autovacuum alone.
	AnalyzeEvery time.Duration
}

// Store is the PostgreSQL store. It is safe for concurrent use.
type Store struct {
	pool    *pgxpool.Pool
	ownPool bool
	schema  string
	channel string
	nodeID  string
	idSeq   string // the sequence of drover_jobs.id, schema-qualified
	log     *slog.Logger
	ann     *announcer
	// the failure batcher (failbatch.go)
	failCh   chan *failReq
	failStop context.CancelFunc
	failDone chan struct{}
	// failBatches counts the batches settled, for tests.
	failBatches atomic.Int64
	closed      atomic.Bool
	// the statistics keeper (analyze.go); analyzes counts its ANALYZEs
	analyzeStop context.CancelFunc
	analyzeDone chan struct{}
	analyzes    atomic.Int64
}

// Open connects to the database at url (a postgres:// URL or DSN), applies
// any pending migrations unless opts.NoMigrate, and returns the store. The
// store owns its pool and closes it on Close.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, &job.ValidationError{Field: "database_url", Message: redact(err.Error(), url)}
	}
	if opts.Schema != "" {
		if err := checkSchemaName(opts.Schema); err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = pgx.Identifier{opts.Schema}.Sanitize()
	}
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		// Commits wait for the WAL flush: connections spend most of their
		// time waiting, and PostgreSQL flushes the commits of all of them
		// together, so a node needs more than one per core.
		cfg.MaxConns = int32(max(16, 4*runtime.GOMAXPROCS(0))) //nolint:gosec // G115: small
	}
	if cfg.ConnConfig.RuntimeParams["plan_cache_mode"] == "" {
		// Drover's statements are prepared once per connection and their
		// best plan does not depend on the values bound; without this,
		// PostgreSQL plans the lease afresh for every call (about 1 ms of
		// CPU each), since its generic plan's estimate looks worse.
		cfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	}
	if cfg.ConnConfig.RuntimeParams["jit"] == "" {
		// A generic plan's estimates can pass jit_above_cost on a large
		// table, and JIT compiles afresh at every execution: tens of
		// milliseconds for a statement that runs in one.
		cfg.ConnConfig.RuntimeParams["jit"] = "off"
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "drover"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	s, err := newStore(ctx, pool, opts)
	if err != nil {
		pool.Close()
		return nil, err
	}
	s.ownPool = true
	return s, nil
}

// New returns a store over the caller's pool, which the caller keeps and
// closes after the store. The pool's search_path decides where the tables
// are; migrations are applied unless opts.NoMigrate.
func New(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	opts.Schema = ""
	return newStore(ctx, pool, opts)
}

func newStore(ctx context.Context, pool *pgxpool.Pool, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := pool.Ping(ctx); err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", unavailable(err))
	}
	schema := opts.Schema
	if schema == "" {
		if err := pool.QueryRow(ctx, `SELECT coalesce(current_schema(), '')`).Scan(&schema); err != nil {
			return nil, fmt.Errorf("read current schema: %w", unavailable(err))
		}
	}
	node := opts.NodeID
	if node == "" {
		node = rand.Text()[:12]
	}
	s := &Store{pool: pool, schema: schema, log: log, channel: channelName(schema), nodeID: strings.ReplaceAll(node, "|", "_")}
	if !opts.NoMigrate {
		if _, err := Migrate(ctx, pool, opts.Schema, Latest); err != nil {
			return nil, err
		}
	} else if err := s.checkVersion(ctx); err != nil {
		return nil, err
	}
	// The identity sequence's name, looked up once: naming it per row
	// costs more than the nextval itself.
	if err := pool.QueryRow(ctx, `SELECT pg_get_serial_sequence('drover_jobs', 'id')`).Scan(&s.idSeq); err != nil {
		return nil, fmt.Errorf("find the job id sequence: %w", unavailable(err))
	}
	s.startAnnouncer()
	s.startFailer()
	s.startAnalyzer(opts.AnalyzeEvery)
	return s, nil
}

// checkVersion refuses a schema older or newer than this build's.
func (s *Store) checkVersion(ctx context.Context) error {
	v, err := Version(ctx, s.pool)
	if err != nil {
		return err
	}
	if want := len(migrations()); v < want {
		return fmt.Errorf("database schema is at version %d, this build needs %d: run `drover migrate`: %w", v, want, job.ErrUnavailable)
	} else if v > want {
		return fmt.Errorf("database schema is at version %d, newer than this build's %d: upgrade Drover: %w", v, want, job.ErrUnavailable)
	}
	return nil
}

// Pool returns the store's pool, for transactional enqueue and for the
// elector and listener.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the schema that holds the store's tables.
func (s *Store) Schema() string { return s.schema }

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return errClosed
	}
	if err := s.pool.Ping(ctx); err != nil {
		return unavailable(err)
	}
	return nil
}

// Close implements store.Store. It closes the pool when Open made it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.stopAnalyzer()
	s.stopFailer()
	s.stopAnnouncer()
	if s.ownPool {
		s.pool.Close()
	}
	return nil
}

var errClosed = fmt.Errorf("store closed: %w", job.ErrUnavailable)

// live returns errClosed after Close.
func (s *Store) live() error {
	if s.closed.Load() {
		return errClosed
	}
	return nil
}

// checkSchemaName accepts ordinary lower-case identifiers only, so that a
// schema name never needs quoting in logs, URLs or psql.
func checkSchemaName(name string) error {
	if len(name) > 63 {
		return &job.ValidationError{Field: "schema", Message: "at most 63 bytes"}
	}
	for i, r := range name {
		ok := r == '_' || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9')
		if !ok {
			return &job.ValidationError{Field: "schema", Message: "use lower-case letters, digits and underscores, not starting with a digit"}
		}
	}
	if name == "" {
		return &job.ValidationError{Field: "schema", Message: "must not be empty"}
	}
	return nil
}

// redact removes a password that a parse error may quote from url.
func redact(msg, url string) string {
	if cfg, err := pgconn.ParseConfig(url); err == nil && cfg.Password != "" {
		msg = strings.ReplaceAll(msg, cfg.Password, "xxxxx")
	}
	if i := strings.Index(msg, "://"); i >= 0 {
		if j := strings.Index(msg[i+3:], "@"); j >= 0 {
			msg = msg[:i+3] + "xxxxx" + msg[i+3+j:]
		}
	}
	return msg
}

// SQLSTATE codes the store reacts to.
const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// retryable reports whether a transaction that failed with err may simply
// run again: PostgreSQL chose it as a deadlock or serialization victim.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == codeSerializationFailure || pe.Code == codeDeadlockDetected
	}
	return false
}

// unavailable marks errors that mean the database cannot be reached (or
// is shutting down, or is out of resources) as job.ErrUnavailable, so
// that callers answer 503 and retry, rather than 500.
func unavailable(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57": // connection, insufficient resources, operator intervention
			return fmt.Errorf("%w: %v", job.ErrUnavailable, err) //nolint:errorlint // the sentinel is the API; the cause is text
		}
		return err
	}
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) || strings.Contains(err.Error(), "closed pool") ||
		strings.Contains(err.Error(), "failed to connect") || strings.Contains(err.Error(), "conn closed") {
		return fmt.Errorf("%w: %v", job.ErrUnavailable, err) //nolint:errorlint // the sentinel is the API; the cause is text
	}
	return err
}

// inTx runs fn in a transaction on the pool, again when PostgreSQL picks
// it as a deadlock or serialization victim.
func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	if err := s.live(); err != nil {
		return err
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		err = pgx.BeginFunc(ctx, s.pool, fn)
		if !retryable(err) {
			break
		}
		time.Sleep(time.Duration(attempt+1) * time.Millisecond)
	}
	return unavailable(err)
}
