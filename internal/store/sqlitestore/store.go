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
// # Storage failures
//
// A commit whose fsync fails is not acknowledged, and neither is anything
// after it: the operating system may have dropped the pages that fsync was
// to write, so the store refuses every write (job.ErrUnavailable) until it
// is reopened and rebuilds its state from what the disk really holds, and
// Ping reports it so /readyz turns unready. A full disk (SQLITE_FULL) rolls
// the batch back and fails it with job.ErrStorageFull; the store keeps
// working and the next write succeeds once space is freed.
//
// # Page checksums
//
// Files go through the sqlitevfs shim, which keeps a CRC-32C in 8 reserved
// bytes of every page of the database file and checks it on every read.
// Open checks every page before serving, so a bit that flipped at rest is
// reported (ErrCorrupt, naming the page) instead of served. Data files made
// before checksums existed open unchecked, with a warning.
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
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"

	// The pure-Go SQLite driver, registered as "sqlite".
	sqlite "modernc.org/sqlite"
)

// ErrLocked is returned by Open when another process owns the data
// directory.
var ErrLocked = errors.New("data directory is in use by another process")

// ErrCorrupt is matched (errors.Is) by the *sqlitevfs.CorruptError that Open
// returns when a page of the data file fails its checksum or its header is
// damaged: the file changed at rest and must be restored from a backup.
var ErrCorrupt = sqlitevfs.ErrCorrupt

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
	// Logger receives warnings, such as a data file without page
	// checksums. Nil means slog.Default().
	Logger *slog.Logger
	// CheckpointPages is the WAL size, in pages, past which a commit
	// copies the WAL into the database file. Zero means SQLite's 1000.
	// Tests lower it to exercise checkpoints.
	CheckpointPages int
	// CheckpointEvery paces the background checkpoints that keep WAL
	// copying off the commit path (see checkpoint.go): at most one per
	// interval while commits arrive. Zero means 20ms; negative turns them
	// off, leaving every checkpoint to the committing writer.
	CheckpointEvery time.Duration
	// Faults, when set, runs the store over a simulated disk that injects
	// the plan's faults (failed fsyncs, a full disk, power loss). For
	// tests only.
	Faults *sqlitevfs.Faults
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
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 20 * time.Millisecond
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Store is the embedded store. It is safe for concurrent use.
type Store struct {
	opts Options
	dir  string
	lock *os.File

	// vfs is the file layer of this store's connections: it seals pages
	// and reports failed fsyncs.
	vfs   *sqlitevfs.VFS
	wdb   *sql.DB
	wconn *sql.Conn
	stmts *stmts
	rdb   *sql.DB

	reqs chan *op
	quit chan struct{}
	done chan struct{}
	// ckKick wakes the background checkpointer, which closes ckDone
	// when it stops (both nil when it is off).
	ckKick chan struct{}
	ckDone chan struct{}

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
	// failed holds the error of a commit that may not have reached the
	// disk; once set, every write is refused until the store is reopened.
	failed atomic.Pointer[error]
	// readyHook, when set, hears of jobs that became available by a
	// dependency's completion (see SetReadyHook).
	readyHook atomic.Pointer[func(queue string, n int)]

	// Counters for Stats.
	commits, requests, checkpoints atomic.Int64

	// Writer-owned state, read by others under mu.
	mu       sync.Mutex
	counts   map[string]map[job.State]int
	paused   map[string]bool
	depsRows int64 // rows in job_deps; writer-only

	// Lease calls waiting for jobs, oldest first (see handoff.go).
	parkMu sync.Mutex
	parked []*parked
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
		if s.vfs != nil {
			_ = s.vfs.Close()
		}
		lock.Close()
		return nil, err
	}
	go s.run()
	return s, nil
}

func (s *Store) open() error {
	path := filepath.Join(s.dir, DBFile)
	var err error
	if s.vfs, err = sqlitevfs.New(sqlitevfs.Options{Faults: s.opts.Faults}); err != nil {
		return err
	}
	if err := s.prepareFile(path); err != nil {
		return err
	}
	if err := sqlitevfs.PageCacheFixErr(); err != nil {
		s.opts.Logger.Warn("SQLite's page cache runs uncorrected: commits that split pages scan the writer's whole cache", "err", err)
	}
	sync := "FULL"
	if s.opts.NoSync {
		sync = "NORMAL"
	}
	wq := url.Values{}
	wq.Set("vfs", s.vfs.Name())
	wq.Add("_pragma", "busy_timeout(10000)")
	wq.Add("_pragma", "journal_mode(WAL)")
	wq.Add("_pragma", "synchronous("+sync+")")
	wq.Add("_pragma", fmt.Sprintf("cache_size(-%d)", s.opts.CacheMiB*1024))
	wq.Add("_pragma", "foreign_keys(OFF)")
	wq.Add("_pragma", "temp_store(MEMORY)")
	if s.opts.CheckpointPages > 0 {
		wq.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", s.opts.CheckpointPages))
	}
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
	rq.Set("vfs", s.vfs.Name())
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
	if err := s.rdb.PingContext(ctx); err != nil {
		return err
	}
	return s.openCheckpointer(path, sync)
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

// prepareFile makes the database file ready to open: it creates a new one
// with page checksums, folds a WAL left by a crash into the file, and then
// checks every page's checksum.
func (s *Store) prepareFile(path string) error {
	walSize := int64(0)
	if wi, err := os.Stat(path + "-wal"); err == nil {
		walSize = wi.Size()
	}
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && walSize > 0:
		// SQLite would replay the WAL of a lost database onto a new one.
		return fmt.Errorf("%s is missing but its WAL %s-wal holds data: restore %s from a backup, or move the WAL away to start empty",
			path, path, DBFile)
	case errors.Is(err, fs.ErrNotExist):
		return sqlitevfs.CreateDatabase(path)
	case err != nil:
		return err
	}
	if fi.Size() == 0 && walSize == 0 {
		// An empty file (SQLite creates one before its first write):
		// nothing to keep, so make it anew with checksums.
		if err := os.Remove(path); err != nil {
			return err
		}
		return sqlitevfs.CreateDatabase(path)
	}
	if walSize > 0 {
		// After a crash the WAL holds committed transactions, and the
		// database file may hold pages torn by a checkpoint that only the
		// WAL can repair: checkpoint first, then check.
		if err := s.checkpointWAL(path); err != nil {
			return err
		}
	}
	seal, err := sqlitevfs.Verify(path)
	if err != nil {
		return err
	}
	switch seal {
	case sqlitevfs.Unsealed:
		s.opts.Logger.Warn("the data file has no page checksums (it predates them): a bit flipped at rest would go undetected",
			"path", path)
	case sqlitevfs.Blank:
		// A copy SQLite wrote page by page (a backup made with VACUUM
		// INTO): it has room for checksums but none yet.
		n, err := sqlitevfs.Reseal(path)
		if err != nil {
			return err
		}
		s.opts.Logger.Warn("the data file is a copy without page checksums (such as a VACUUM INTO backup): its pages are now checksummed, "+
			"but damage done to it before this start cannot be detected", "path", path, "pages", n)
	case sqlitevfs.Sealed:
	}
	return nil
}

// checkpointWAL opens the database once to recover its WAL and copy it
// into the database file.
func (s *Store) checkpointWAL(path string) error {
	q := url.Values{}
	q.Set("vfs", s.vfs.Name())
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "synchronous(FULL)")
	db, err := sql.Open("sqlite", fileURI(path, q))
	if err != nil {
		return err
	}
	var busy, logPages, done int
	err = db.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if c := s.vfs.Corruption(); c != nil {
		return c
	}
	if err != nil {
		return fmt.Errorf("recover the WAL of %s: %w", path, err)
	}
	if busy != 0 {
		return fmt.Errorf("recover the WAL of %s: checkpoint blocked", path)
	}
	return nil
}

// checkIntegrity runs SQLite's quick_check so that a corrupt file is
// reported at start instead of being served.
func (s *Store) checkIntegrity(ctx context.Context) error {
	rows, err := s.wconn.QueryContext(ctx, "PRAGMA quick_check")
	if err != nil {
		if c := s.vfs.Corruption(); c != nil {
			return c
		}
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
		if c := s.vfs.Corruption(); c != nil {
			return c
		}
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
	if err := s.failure(); err != nil {
		return err
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
		if s.ckDone != nil {
			<-s.ckDone
		}
		s.closeErr = s.closeDBs()
		if err := s.lock.Close(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
		if err := s.vfs.Close(); err != nil && s.closeErr == nil {
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
		if s.failure() == nil {
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

// failure returns the error that every write gets once the store's
// storage failed (a commit or fsync that may not have reached the disk),
// or nil.
func (s *Store) failure() error {
	p := s.failed.Load()
	if p == nil && s.vfs != nil {
		if err := s.vfs.SyncErr(); err != nil {
			s.poison(err)
			p = s.failed.Load()
		}
	}
	if p == nil {
		return nil
	}
	return fmt.Errorf("%w: storage failed, so the store accepts no more writes until drover is restarted: %v", job.ErrUnavailable, *p) //nolint:errorlint // wraps the sentinel only: the backend error is text, not API
}

// Stats counts the work of the writer since Open.
type Stats struct {
	// Requests is how many write requests were run.
	Requests int64
	// Commits is how many transactions were committed (each one fsync).
	// Requests/Commits is the group commit's average batch.
	Commits int64
	// Queued is how many write requests wait for the writer now.
	Queued int
	// Checkpoints is how many background checkpoint passes ran.
	Checkpoints int64
}

// Stats returns the writer's counters.
func (s *Store) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Commits: s.commits.Load(), Queued: len(s.reqs), Checkpoints: s.checkpoints.Load()}
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

// isFull reports whether err is SQLite's "database or disk is full".
func isFull(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		const sqliteFull = 13
		return se.Code()&0xff == sqliteFull
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
