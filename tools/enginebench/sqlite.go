package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"

	_ "modernc.org/sqlite" // registers "sqlite"
)

// sqliteSchema is the jobs table of internal/store/sqlitestore/schema.go;
// sqliteIndexes are its indexes as committed, sqliteLeanIndexes the
// smaller set under way in the working tree at the time of writing.
const sqliteSchema = `
CREATE TABLE jobs (
	id               INTEGER PRIMARY KEY AUTOINCREMENT,
	state            TEXT    NOT NULL,
	queue            TEXT    NOT NULL,
	kind             TEXT    NOT NULL,
	priority         INTEGER NOT NULL,
	scheduled_at     INTEGER NOT NULL,
	args             BLOB    NOT NULL,
	attempt          INTEGER NOT NULL DEFAULT 0,
	max_attempts     INTEGER NOT NULL,
	timeout_us       INTEGER NOT NULL DEFAULT 0,
	unique_key       TEXT,
	unique_by_period INTEGER NOT NULL DEFAULT 0,
	tags             TEXT,
	metadata         BLOB,
	depends_on       TEXT,
	pending_deps     INTEGER NOT NULL DEFAULT 0,
	output           BLOB,
	errors           BLOB,
	created_at       INTEGER NOT NULL,
	attempted_at     INTEGER,
	finalized_at     INTEGER,
	attempted_by     TEXT,
	lease_token      TEXT,
	lease_expires_at INTEGER,
	settled          TEXT
);
`

const sqliteIndexes = `
CREATE INDEX jobs_fetch ON jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX jobs_lease ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_finalized ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
`

const sqliteLeanIndexes = `
CREATE INDEX jobs_fetch ON jobs (queue, priority, scheduled_at, id) WHERE state = 'available';
CREATE INDEX jobs_state ON jobs (state, id) WHERE state <> 'available';
CREATE INDEX jobs_due ON jobs (scheduled_at) WHERE state IN ('scheduled', 'retryable');
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key) WHERE unique_key IS NOT NULL;
`

const sqliteJobCols = `id, state, queue, kind, priority, scheduled_at, args, attempt, max_attempts,
	timeout_us, unique_key, tags, metadata, depends_on, output, errors, created_at,
	attempted_at, finalized_at, attempted_by, lease_token, lease_expires_at`

type sqliteEngine struct {
	db   *sql.DB
	conn *sql.Conn
	ins  *sql.Stmt
	ls   *sql.Stmt
	cmp  *sql.Stmt
}

func openSQLite(dir string, o engineOpts) (*sqliteEngine, error) {
	// The same connection settings as sqlitestore.Open (durable mode).
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", fmt.Sprintf("cache_size(-%d)", o.sqliteCache*1024))
	q.Add("_pragma", "foreign_keys(OFF)")
	q.Add("_pragma", "temp_store(MEMORY)")
	// The path is escaped: SQLite reads a file: name as a URI, so a '#' or
	// '?' in the directory would otherwise cut the path short.
	path := (&url.URL{Path: filepath.Join(dir, "drover.db")}).EscapedPath()
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	ctx := context.Background()
	e := &sqliteEngine{db: db}
	if e.conn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, err
	}
	var n int
	if err := e.conn.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE name = 'jobs'`).Scan(&n); err != nil {
		e.Close()
		return nil, err
	}
	if n == 0 {
		idx := sqliteIndexes
		if o.lean {
			idx = sqliteLeanIndexes
		}
		if _, err := e.conn.ExecContext(ctx, "BEGIN IMMEDIATE;"+sqliteSchema+idx+"COMMIT;"); err != nil {
			e.Close()
			return nil, fmt.Errorf("create schema: %w", err)
		}
	}
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = e.conn.PrepareContext(ctx, q)
		return st
	}
	// The statements of sqlitestore/stmts.go: insert, leaseQueue, complete.
	e.ins = prep(`INSERT INTO jobs (state, queue, kind, priority, scheduled_at, args, max_attempts,
		timeout_us, unique_key, unique_by_period, tags, metadata, depends_on, pending_deps, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
	e.ls = prep(`UPDATE jobs SET state = 'running', attempt = attempt + 1, attempted_at = ?1,
		attempted_by = ?2, lease_token = lower(hex(randomblob(16))), lease_expires_at = ?3, settled = NULL
		WHERE id IN (SELECT id FROM jobs WHERE state = 'available' AND queue = ?4
		ORDER BY priority, scheduled_at, id LIMIT ?5) RETURNING ` + sqliteJobCols)
	e.cmp = prep(`UPDATE jobs SET state = 'completed', finalized_at = ?1, output = ?2,
		lease_expires_at = NULL, settled = 'complete',
		unique_key = CASE WHEN unique_by_period = 1 THEN unique_key END
		WHERE id = ?3 AND lease_token = ?4 AND state = 'running' RETURNING ` + sqliteJobCols)
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	return e, nil
}

func (e *sqliteEngine) Close() error {
	for _, st := range []*sql.Stmt{e.ins, e.ls, e.cmp} {
		if st != nil {
			st.Close()
		}
	}
	if e.conn != nil {
		e.conn.Close()
	}
	return e.db.Close()
}

func (e *sqliteEngine) Update(fn func(Tx) error) error {
	ctx := context.Background()
	if _, err := e.conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if err := fn(sqliteTx{e}); err != nil {
		e.conn.ExecContext(ctx, "ROLLBACK") //nolint:errcheck // the first error matters
		return err
	}
	_, err := e.conn.ExecContext(ctx, "COMMIT")
	return err
}

type sqliteTx struct{ e *sqliteEngine }

func (t sqliteTx) Savepoint() error {
	_, err := t.e.conn.ExecContext(context.Background(), "SAVEPOINT op")
	return err
}

func (t sqliteTx) Release(rollback bool) error {
	ctx := context.Background()
	if rollback {
		if _, err := t.e.conn.ExecContext(ctx, "ROLLBACK TO op"); err != nil {
			return err
		}
	}
	_, err := t.e.conn.ExecContext(ctx, "RELEASE op")
	return err
}

func (t sqliteTx) Insert(j *NewJob) (int64, error) {
	res, err := t.e.ins.Exec(stAvailable, j.Queue, j.Kind, j.Priority, j.ScheduledAt, j.Args,
		j.MaxAttempts, 0, nil, 0, nil, nil, nil, 0, j.CreatedAt)
	if err != nil {
		return 0, err
	}
	return res.LastInsertId()
}

// jobRow receives one row of sqliteJobCols, as sqlitestore's scanJob does.
type jobRow struct {
	id, prio, sched, attempt, maxAttempts, timeout, created int64
	state, queue, kind                                      string
	args, metadata, output, errs                            []byte
	uniqueKey, tags, deps, by, token                        sql.NullString
	attempted, finalized, leaseExp                          sql.NullInt64
}

func (r *jobRow) dest() []any {
	return []any{&r.id, &r.state, &r.queue, &r.kind, &r.prio, &r.sched, &r.args, &r.attempt,
		&r.maxAttempts, &r.timeout, &r.uniqueKey, &r.tags, &r.metadata, &r.deps, &r.output, &r.errs,
		&r.created, &r.attempted, &r.finalized, &r.by, &r.token, &r.leaseExp}
}

func (t sqliteTx) Lease(queue string, limit int, now, exp int64, worker string) ([]Leased, error) {
	rows, err := t.e.ls.Query(now, worker, exp, queue, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]Leased, 0, limit)
	var r jobRow
	for rows.Next() {
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, err
		}
		out = append(out, Leased{ID: r.id, Token: r.token.String})
	}
	return out, rows.Err()
}

func (t sqliteTx) Complete(id int64, token string, now int64) (bool, error) {
	rows, err := t.e.cmp.Query(now, nil, id, token)
	if err != nil {
		return false, err
	}
	defer rows.Close()
	ok := false
	var r jobRow
	for rows.Next() {
		if err := rows.Scan(r.dest()...); err != nil {
			return false, err
		}
		ok = true
	}
	return ok, rows.Err()
}
