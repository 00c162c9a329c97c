// Package sqlitestore is Drover's embedded store: a store.Store on SQLite
// (modernc.org/sqlite, pure Go) in one data directory.
//
// # Durability and group commit
//
// Every write goes through one writer goroutine that owns the single
// writing connection. Requests queue on a bounded channel; the writer takes
// all that are waiting (up to Options.MaxBatch), runs each inside its own
// savepoint of one transaction, commits once (WAL with synchronous=FULL, so
// the commit is fsynced) and only then answers every caller. Concurrent
// writers therefore share one transaction and one fsync, and no caller is
// answered before its write is durable. A failed request rolls back to its
// savepoint without touching the others in the batch.
//
// Reads (Get, List) use a separate pool of read-only connections, which in
// WAL mode never block the writer.
//
// # In-memory state
//
// The store keeps the job count of each queue and state, the paused queues
// and whether any dependency is outstanding in memory, so that Queues and
// Lease need no scans. All of it is rebuilt from the database at Open, so a
// kill -9 loses nothing: the database is the only source of truth.
//
// # Ownership
//
// One process owns a data directory: Open takes an exclusive lock on a LOCK
// file in it and returns ErrLocked when another process holds it.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"

	// The pure-Go SQLite driver, registered as "sqlite".
	sqlite "modernc.org/sqlite"
)

// ErrLocked is returned by Open when another process owns the data
// directory.
var ErrLocked = errors.New("data directory is in use by another process")

// DBFile is the name of the database file inside the data directory.
const DBFile = "drover.db"

// Options tune the store. The zero value is the durable default.
type Options struct {
	// MaxBatch caps how many write requests share one transaction.
	// Zero means 1024.
	MaxBatch int
	// QueueDepth bounds the write requests waiting for the writer; callers
	// beyond it block (until their context ends). Zero means 8192.
	QueueDepth int
	// ReadConns is the size of the read pool. Zero means 4.
	ReadConns int
	// CacheMiB is the page cache of the writing connection. Zero means 32.
	CacheMiB int
	// NoSync turns off fsync at commit (synchronous=NORMAL). Acknowledged
	// writes may then be lost on power failure, though not on a process
	// crash. For tests and benchmarks only.
	NoSync bool
}

func (o *Options) setDefaults() {
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.QueueDepth <= 0 {
		o.QueueDepth = 8192
	}
	if o.ReadConns <= 0 {
		o.ReadConns = 4
	}
	if o.CacheMiB <= 0 {
		o.CacheMiB = 32
	}
}

// Store is the embedded store. It is safe for concurrent use.
type Store struct {
	opts Options
	dir  string
	lock *os.File

	wdb   *sql.DB
	wconn *sql.Conn
	stmts *stmts
	rdb   *sql.DB

	reqs chan *op
	quit chan struct{}
	done chan struct{}

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
	// failed holds the error of a commit that may not have reached the
	// disk; once set, every write is refused until the store is reopened.
	failed atomic.Pointer[error]

	// Counters for Stats.
	commits, requests atomic.Int64

	// Writer-owned state, read by others under mu.
	mu       sync.Mutex
	counts   map[string]map[job.State]int
	paused   map[string]bool
	depsRows int64 // rows in job_deps; writer-only
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the store in dir, migrates its schema and
// rebuilds the in-memory state. It returns ErrLocked when another process
// owns dir.
func Open(dir string, opts Options) (*Store, error) {
	opts.setDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, "LOCK"))
	if err != nil {
		if errors.Is(err, ErrLocked) {
			return nil, fmt.Errorf("open %s: %w", dir, ErrLocked)
		}
		return nil, err
	}
	s := &Store{
		opts:   opts,
		dir:    dir,
		lock:   lock,
		reqs:   make(chan *op, opts.QueueDepth),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
		counts: map[string]map[job.State]int{},
		paused: map[string]bool{},
	}
	if err := s.open(); err != nil {
		_ = s.closeDBs() // best effort: the open error is the one to report
		lock.Close()
		return nil, err
	}
	go s.run()
	return s, nil
}

func (s *Store) open() error {
	path := filepath.Join(s.dir, DBFile)
	sync := "FULL"
	if s.opts.NoSync {
		sync = "NORMAL"
	}
	wq := url.Values{}
	wq.Add("_pragma", "busy_timeout(10000)")
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Add("_pragma", "synchronous("+sync+")")
	wq.Add("_pragma", fmt.Sprintf("cache_size(-%d)", s.opts.CacheMiB*1024))
	wq.Add("_pragma", "foreign_keys(OFF)")
	wq.Add("_pragma", "temp_store(MEMORY)")
	var err error
	s.wdb, err = sql.Open("sqlite", fileURI(path, wq))
	if err != nil {
		return err
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	ctx := context.Background()
	s.wconn, err = s.wdb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if err := s.checkIntegrity(ctx); err != nil {
		return err
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if s.stmts, err = prepare(ctx, s.wconn); err != nil {
		return err
	}
	if err := s.loadState(ctx); err != nil {
		return err
	}

	rq := url.Values{}
	rq.Add("mode", "ro")
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "query_only(1)")
	rq.Add("_pragma", "cache_size(-4096)")
	s.rdb, err = sql.Open("sqlite", fileURI(path, rq))
	if err != nil {
		return err
	}
	s.rdb.SetMaxOpenConns(s.opts.ReadConns)
	s.rdb.SetMaxIdleConns(s.opts.ReadConns)
	return s.rdb.PingContext(ctx)
}

// fileURI builds the SQLite URI for path. The path is escaped: SQLite
// reads "file:" names as URIs, so a directory with "#" or "?" in its name
// would otherwise open a different, shortened path.
func fileURI(path string, q url.Values) string {
	p := filepath.ToSlash(path)
	if filepath.VolumeName(path) != "" {
		p = "/" + p // file:/C:/dir/drover.db on Windows
	}
	return "file:" + (&url.URL{Path: p}).EscapedPath() + "?" + q.Encode()
}

// checkIntegrity runs SQLite's quick_check so that a corrupt file is
// reported at start instead of being served.
func (s *Store) checkIntegrity(ctx context.Context) error {
	rows, err := s.wconn.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var msg string
		if err := rows.Scan(&msg); err != nil {
			return fmt.Errorf("check database: %w", err)
		}
		if msg != "ok" {
			problems = append(problems, msg)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check database: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("database %s is corrupt: %s", filepath.Join(s.dir, DBFile), strings.Join(problems, "; "))
	}
	return nil
}

func (s *Store) migrate(ctx context.Context) error {
	var version int
	if err := s.wconn.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("database schema version %d is newer than this binary knows (%d): upgrade drover", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		if err := s.execTx(ctx, migrations[v]+fmt.Sprintf("\nPRAGMA user_version = %d;", v+1)); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
	}
	return nil
}

func (s *Store) execTx(ctx context.Context, script string) error {
	if _, err := s.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if _, err := s.wconn.ExecContext(ctx, script); err != nil {
		s.wconn.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // the first error matters
		return err
	}
	_, err := s.wconn.ExecContext(ctx, "COMMIT")
	return err
}

// loadState rebuilds the in-memory counts, paused set and dependency
// count from the database.
func (s *Store) loadState(ctx context.Context) error {
	rows, err := s.wconn.QueryContext(ctx, "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state")
	if err != nil {
		return fmt.Errorf("count jobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var q, st string
		var n int
		if err := rows.Scan(&q, &st, &n); err != nil {
			return err
		}
		s.addCount(q, job.State(st), n)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	prow, err := s.wconn.QueryContext(ctx, "SELECT name FROM queues WHERE paused = 1")
	if err != nil {
		return fmt.Errorf("load queues: %w", err)
	}
	defer prow.Close()
	for prow.Next() {
		var q string
		if err := prow.Scan(&q); err != nil {
			return err
		}
		s.paused[q] = true
	}
	if err := prow.Err(); err != nil {
		return err
	}
	return s.wconn.QueryRowContext(ctx, "SELECT count(*) FROM job_deps").Scan(&s.depsRows)
}

func (s *Store) addCount(queue string, st job.State, n int) {
	m := s.counts[queue]
	if m == nil {
		m = map[job.State]int{}
		s.counts[queue] = m
	}
	m[st] += n
	if m[st] == 0 {
		delete(m, st)
	}
}

// Ping implements store.Store.
func (s *Store) Ping(ctx context.Context) error {
	if s.closed.Load() {
		return job.ErrUnavailable
	}
	if p := s.failed.Load(); p != nil {
		return fmt.Errorf("%w: %v", job.ErrUnavailable, *p) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
	}
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("%w: %v", job.ErrUnavailable, err) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
	}
	return nil
}

// Close stops the writer after the requests already queued, closes the
// database and releases the data directory. It is safe to call twice.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		<-s.done
		s.closeErr = s.closeDBs()
		if err := s.lock.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	// Readers first, so that the writer is the last connection: it can
	// then fold the WAL into the database file, leaving drover.db
	// complete on its own after a clean stop.
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.stmts != nil {
		errs = append(errs, s.stmts.close())
	}
	if s.wconn != nil {
		if s.failed.Load() == nil {
			if _, err := s.wconn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
				errs = append(errs, fmt.Errorf("checkpoint: %w", err))
			}
		}
		errs = append(errs, s.wconn.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	return errors.Join(errs...)
}

// Stats counts the work of the writer since Open.
type Stats struct {
	// Requests is how many write requests were run.
	Requests int64
	// Commits is how many transactions were committed (each one fsync).
	// Requests/Commits is the group commit's average batch.
	Commits int64
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Commits: s.commits.Load()}
}

// Dir returns the data directory.
func (s *Store) Dir() string { return s.dir }

// isIOError reports whether err is SQLite's I/O error class, after which
// the state of the disk is unknown.
func isIOError(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		const sqliteIOErr = 10
		return se.Code()&0xff == sqliteIOErr
	}
	return false
}

// isConstraint reports whether err is a constraint violation.
func isConstraint(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		const sqliteConstraint = 19
		return se.Code()&0xff == sqliteConstraint
	}
	return false
}
