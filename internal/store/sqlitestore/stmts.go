package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// stmts are the writer's prepared statements for the hot paths.
type stmts struct {
	// inserts[n] inserts n rows; prepared on first use.
	inserts      map[int]*sql.Stmt
	byUnique     *sql.Stmt
	depState     *sql.Stmt
	insertDep    *sql.Stmt
	leaseQueue   *sql.Stmt
	candidates   *sql.Stmt
	leaseIDs     *sql.Stmt
	complete     *sql.Stmt
	completeMany *sql.Stmt
	settleState  *sql.Stmt
	get          *sql.Stmt
	dependants   *sql.Stmt
	dropDeps     *sql.Stmt
	depDone      *sql.Stmt
	heartbeat    *sql.Stmt
	idemLookup   *sql.Stmt
	idemRecord   *sql.Stmt

	begin, commit, savepoint, release, rollbackTo *sql.Stmt
}

// settledCols is what a completion returns (see scanSettled).
const settledCols = `id, kind, queue, attempt, finalized_at, output`

// leaseSet leases a row: a job with a timeout gets no lease past it, so
// an attempt that outruns its timeout is rescued like a lost worker.
const leaseSet = `SET state = 'running', attempt = attempt + 1, attempted_at = ?1,
	attempted_by = ?2, lease_token = lower(hex(randomblob(16))),
	lease_expires_at = CASE WHEN timeout_us > 0 AND ?1 + timeout_us < ?3 THEN ?1 + timeout_us ELSE ?3 END,
	settled = NULL`

// inTime is true while a running attempt is within its timeout at ?1.
const inTime = `(timeout_us = 0 OR attempted_at + timeout_us > ?1)`

func prepare(ctx context.Context, c *sql.Conn) (*stmts, error) {
	s := &stmts{inserts: map[int]*sql.Stmt{}}
	var errs []error
	p := func(dst **sql.Stmt, q string) {
		st, err := c.PrepareContext(ctx, q)
		if err != nil {
			errs = append(errs, fmt.Errorf("prepare %q: %w", q, err))
			return
		}
		*dst = st
	}
	p(&s.begin, `BEGIN IMMEDIATE`)
	p(&s.commit, `COMMIT`)
	p(&s.savepoint, `SAVEPOINT op`)
	p(&s.release, `RELEASE op`)
	p(&s.rollbackTo, `ROLLBACK TO op`)
	p(&s.byUnique, `SELECT `+jobCols+` FROM jobs WHERE unique_key = ?`)
	p(&s.depState, `SELECT state FROM jobs WHERE id = ?`)
	p(&s.insertDep, `INSERT OR IGNORE INTO job_deps (dep_id, job_id) VALUES (?, ?)`)
	p(&s.leaseQueue, `UPDATE jobs `+leaseSet+` WHERE id IN (
		SELECT id FROM jobs WHERE state = 'available' AND queue = ?4
		ORDER BY priority, scheduled_at, id LIMIT ?5) RETURNING `+jobCols)
	p(&s.candidates, `SELECT id, priority, scheduled_at FROM jobs
		WHERE state = 'available' AND queue = ? ORDER BY priority, scheduled_at, id LIMIT ?`)
	p(&s.leaseIDs, `UPDATE jobs `+leaseSet+` WHERE id IN (SELECT value FROM json_each(?4))
		AND state = 'available' RETURNING `+jobCols)
	p(&s.complete, `UPDATE jobs SET state = 'completed', finalized_at = ?1, output = ?2,
		lease_expires_at = NULL, settled = 'complete',
		unique_key = CASE WHEN unique_by_period = 1 THEN unique_key END
		WHERE id = ?3 AND lease_token = ?4 AND state = 'running' AND `+inTime+` RETURNING `+settledCols)
	p(&s.completeMany, `UPDATE jobs SET state = 'completed', finalized_at = ?1, output = NULL,
		lease_expires_at = NULL, settled = 'complete',
		unique_key = CASE WHEN unique_by_period = 1 THEN unique_key END
		FROM (SELECT value ->> 0 AS c_id, value ->> 1 AS c_token FROM json_each(?2)) AS c
		WHERE jobs.id = c.c_id AND jobs.lease_token = c.c_token AND jobs.state = 'running' AND `+inTime+`
		RETURNING `+settledCols)
	p(&s.settleState, `SELECT state, lease_token, settled FROM jobs WHERE id = ?`)
	p(&s.get, `SELECT `+jobCols+` FROM jobs WHERE id = ?`)
	p(&s.dependants, `SELECT job_id FROM job_deps WHERE dep_id = ?`)
	p(&s.dropDeps, `DELETE FROM job_deps WHERE dep_id = ?`)
	p(&s.depDone, `UPDATE jobs SET pending_deps = pending_deps - 1,
		state = CASE WHEN pending_deps > 1 THEN state
			WHEN scheduled_at > ?1 THEN 'scheduled' ELSE 'available' END
		WHERE id = ?2 AND state = 'pending' RETURNING queue, state`)
	p(&s.heartbeat, `UPDATE jobs SET lease_expires_at = CASE WHEN timeout_us > 0 AND attempted_at + timeout_us < ?4
		THEN attempted_at + timeout_us ELSE ?4 END
		WHERE id = ?2 AND lease_token = ?3 AND state = 'running' AND `+inTime+` RETURNING `+jobCols)
	p(&s.idemLookup, `SELECT request_hash, status, body FROM idempotency_keys
			WHERE key = ? AND created_at >= ?`)
	// An expired record with the same key is replaced.
	p(&s.idemRecord, `INSERT INTO idempotency_keys (key, request_hash, status, body, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash,
			status = excluded.status, body = excluded.body, created_at = excluded.created_at`)
	if len(errs) > 0 {
		s.close()
		return nil, errors.Join(errs...)
	}
	return s, nil
}

func (s *stmts) close() error {
	var errs []error
	for _, st := range s.inserts {
		errs = append(errs, st.Close())
	}
	for _, st := range []*sql.Stmt{s.byUnique, s.depState, s.insertDep, s.leaseQueue,
		s.candidates, s.leaseIDs, s.complete, s.completeMany, s.settleState, s.get, s.dependants, s.dropDeps,
		s.depDone, s.heartbeat, s.idemLookup, s.idemRecord, s.begin, s.commit, s.savepoint, s.release, s.rollbackTo} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}
