package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// querier is what both the pool and a transaction offer.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
	CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error)
}

// inTime is true while a running attempt of j is within its timeout at $1.
const inTime = `(j.timeout_us = 0 OR j.attempted_at + j.timeout_us * interval '1 microsecond' > $1::timestamptz)`

// retry runs fn again when PostgreSQL picks its (implicit) transaction as a
// deadlock or serialization victim.
func (s *Store) retry(ctx context.Context, fn func() error) error {
	if err := s.live(); err != nil {
		return err
	}
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = fn(); !retryable(err) {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
	return unavailable(err)
}

// Insert implements store.Store.
func (s *Store) Insert(ctx context.Context, p store.InsertParams) ([]store.InsertResult, error) {
	now := job.Truncate(p.Now)
	var out []store.InsertResult
	if allPlain(p.Jobs) {
		// One multi-row statement, atomic on its own: no transaction.
		err := s.retry(ctx, func() error {
			var err error
			out, err = s.insertRows(ctx, s.pool, p.Jobs, now, false)
			return err
		})
		if err != nil {
			return nil, err
		}
		s.announceInserted(out)
		return out, nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, err = s.insert(ctx, tx, p.Jobs, now, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	s.announceInserted(out)
	return out, nil
}

// InsertTx inserts jobs inside the caller's transaction: they exist, and
// workers on every node see them, exactly when tx commits. The insert runs
// in a savepoint, so that a refused insert leaves tx usable. Its
// notification carries no node id, so this node's listener wakes its own
// waiters too when tx commits.
func (s *Store) InsertTx(ctx context.Context, tx pgx.Tx, p store.InsertParams) ([]store.InsertResult, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	now := job.Truncate(p.Now)
	var out []store.InsertResult
	err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		var err error
		out, err = s.insert(ctx, sp, p.Jobs, now, true)
		return err
	})
	if err != nil {
		return nil, unavailable(err)
	}
	return out, nil
}

// insert inserts jobs in order inside a transaction and returns their
// results: runs of plain jobs in multi-row statements, unique and
// dependent jobs one by one.
//
// With txNotify the statements NOTIFY themselves, for a transaction that
// the caller commits (InsertTx); otherwise the caller announces the jobs
// once its transaction has committed.
func (s *Store) insert(ctx context.Context, q querier, jobs []*job.Insert, now time.Time, txNotify bool) ([]store.InsertResult, error) {
	out := make([]store.InsertResult, len(jobs))
	run := 0
	flush := func(end int) error {
		if run == end {
			return nil
		}
		res, err := s.insertRows(ctx, q, jobs[run:end], now, txNotify)
		if err != nil {
			return err
		}
		copy(out[run:end], res)
		return nil
	}
	for i, in := range jobs {
		if plain(in) {
			continue
		}
		if err := flush(i); err != nil {
			return nil, err
		}
		r, err := s.insertOne(ctx, q, in, now, i, len(jobs) > 1, txNotify)
		if err != nil {
			return nil, err
		}
		out[i] = r
		run = i + 1
	}
	if err := flush(len(jobs)); err != nil {
		return nil, err
	}
	return out, nil
}

func plain(in *job.Insert) bool { return in.UniqueKey == "" && len(in.DependsOn) == 0 }

func allPlain(ins []*job.Insert) bool {
	for _, in := range ins {
		if !plain(in) {
			return false
		}
	}
	return true
}

// insertSQL inserts rows given as parallel arrays in one statement. Ids
// come from the identity sequence in the order of the arrays, so the
// caller sorts the returned ids to match them to its rows. With txNotify
// the statement also NOTIFYs ($17) the queues that gained available jobs,
// without a node id, so that every node wakes when the transaction
// commits.
//
// Only InsertTx notifies inside the transaction: PostgreSQL serializes
// the commits of transactions that NOTIFY (a database-wide lock held
// across the WAL flush), which would undo group commit, so every other
// path announces its jobs after its commit instead (see announce).
func insertSQL(onConflict string, txNotify bool) string {
	if !txNotify {
		return `WITH ins AS (` + insertBody + onConflict + `
	RETURNING id
)
SELECT id FROM ins`
	}
	return `WITH ins AS (` + insertBody + onConflict + `
	RETURNING id, queue, state
), woke AS (
	SELECT count(pg_notify($17, n || '||' || q)) AS n
	FROM (SELECT queue AS q, count(*) AS n FROM ins WHERE state = 'available' GROUP BY queue) AS d
)
SELECT ins.id FROM ins CROSS JOIN woke`
}

// insertBody is the INSERT of insertSQL.
const insertBody = `
	INSERT INTO drover_jobs (state, queue, kind, priority, scheduled_at, args, max_attempts, timeout_us,
		unique_key, unique_by_period, tags, metadata, depends_on, pending_deps, created_at, created_by)
	SELECT u.state, u.queue, u.kind, u.priority, u.scheduled_at, u.args::json, u.max_attempts, u.timeout_us,
		u.unique_key, u.unique_by_period,
		CASE WHEN u.tags IS NULL THEN NULL ELSE ARRAY(SELECT json_array_elements_text(u.tags::json)) END,
		u.metadata::json,
		CASE WHEN u.deps IS NULL THEN NULL ELSE ARRAY(SELECT json_array_elements_text(u.deps::json)::bigint) END,
		u.pending_deps, u.created_at, u.created_by
	FROM unnest($1::text[], $2::text[], $3::text[], $4::smallint[], $5::timestamptz[], $6::text[], $7::integer[],
		$8::bigint[], $9::text[], $10::boolean[], $11::text[], $12::text[], $13::text[], $14::integer[],
		$15::timestamptz[], $16::text[])
		AS u(state, queue, kind, priority, scheduled_at, args, max_attempts, timeout_us, unique_key,
			unique_by_period, tags, metadata, deps, pending_deps, created_at, created_by)
	`

// insertBatch holds the parallel arrays of insertSQL.
type insertBatch struct {
	state, queue, kind              []string
	priority                        []int16
	scheduledAt, createdAt          []time.Time
	args, uniqueKey, tags, metadata []*string
	deps, createdBy                 []*string
	maxAttempts, pendingDeps        []int32
	timeoutUS                       []int64
	uniqueByPeriod                  []bool
}

func (b *insertBatch) add(in *job.Insert, state job.State, unmet int) error {
	tags, err := jsonOrNil(in.Tags)
	if err != nil {
		return err
	}
	deps, err := jsonOrNil(in.DependsOn)
	if err != nil {
		return err
	}
	b.state = append(b.state, string(state))
	b.queue = append(b.queue, in.Queue)
	b.kind = append(b.kind, in.Kind)
	b.priority = append(b.priority, int16(in.Priority)) //nolint:gosec // G115: validated to 1..9
	b.scheduledAt = append(b.scheduledAt, in.ScheduledAt)
	b.args = append(b.args, textArg(in.Args))
	b.maxAttempts = append(b.maxAttempts, int32(in.MaxAttempts)) //nolint:gosec // G115: validated
	b.timeoutUS = append(b.timeoutUS, in.Timeout.Microseconds())
	b.uniqueKey = append(b.uniqueKey, nullString(in.UniqueKey))
	b.uniqueByPeriod = append(b.uniqueByPeriod, in.UniqueByPeriod)
	b.tags = append(b.tags, tags)
	b.metadata = append(b.metadata, textArg(in.Metadata))
	b.deps = append(b.deps, deps)
	b.pendingDeps = append(b.pendingDeps, int32(unmet)) //nolint:gosec // G115: at most job.MaxDependsOn
	b.createdAt = append(b.createdAt, in.CreatedAt)
	b.createdBy = append(b.createdBy, nullString(in.CreatedBy))
	return nil
}

func (b *insertBatch) params(channel string, txNotify bool) []any {
	p := []any{b.state, b.queue, b.kind, b.priority, b.scheduledAt, b.args, b.maxAttempts, b.timeoutUS,
		b.uniqueKey, b.uniqueByPeriod, b.tags, b.metadata, b.deps, b.pendingDeps, b.createdAt, b.createdBy}
	if txNotify {
		p = append(p, channel)
	}
	return p
}

func jsonOrNil[T any](v []T) (*string, error) {
	if len(v) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	s := string(b)
	return &s, nil
}

// insertRows inserts plain jobs (not unique, no dependencies) in one
// statement and returns their results in order.
func (s *Store) insertRows(ctx context.Context, q querier, ins []*job.Insert, now time.Time, txNotify bool) ([]store.InsertResult, error) {
	if len(ins) >= copyMinRows {
		return s.copyRows(ctx, q, ins, now, txNotify)
	}
	if len(ins) == 1 && !txNotify {
		return s.insertSingle(ctx, q, ins[0], now)
	}
	var b insertBatch
	states := make([]job.State, len(ins))
	for k, in := range ins {
		states[k] = job.InitialState(in.ScheduledAt, now, false)
		if err := b.add(in, states[k], 0); err != nil {
			return nil, err
		}
	}
	rows, err := q.Query(ctx, insertSQL("", txNotify), b.params(s.channel, txNotify)...)
	if err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	if len(ids) != len(ins) {
		return nil, fmt.Errorf("insert jobs: %d rows inserted for %d jobs", len(ids), len(ins))
	}
	slices.Sort(ids)
	out := make([]store.InsertResult, len(ins))
	for k, in := range ins {
		out[k] = store.InsertResult{Job: store.NewJob(ids[k], in, states[k])}
	}
	return out, nil
}

// insertOne inserts a unique or dependent job. A live job holding its
// unique key makes it a duplicate; the unique index decides races between
// nodes (ON CONFLICT DO NOTHING waits for the other insert to commit).
// Dependencies are read FOR SHARE, so that one cannot complete unseen
// while this job is recorded as waiting for it.
func (s *Store) insertOne(ctx context.Context, q querier, in *job.Insert, now time.Time, idx int, many bool, txNotify bool) (store.InsertResult, error) {
	for range 10 {
		if in.UniqueKey != "" {
			existing, err := collect(q.Query(ctx, `SELECT `+jobCols+` FROM drover_jobs j WHERE j.unique_key = $1`, in.UniqueKey))
			if err != nil {
				return store.InsertResult{}, fmt.Errorf("look up unique key: %w", err)
			}
			if len(existing) > 0 {
				existing[0].LeaseToken = ""
				return store.InsertResult{Job: existing[0], Duplicate: true}, nil
			}
		}
		unmet, err := s.unmetDeps(ctx, q, in, idx, many)
		if err != nil {
			return store.InsertResult{}, err
		}
		state := job.InitialState(in.ScheduledAt, now, len(unmet) > 0)
		var b insertBatch
		if err := b.add(in, state, len(unmet)); err != nil {
			return store.InsertResult{}, err
		}
		rows, err := q.Query(ctx, insertSQL(`ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING`, txNotify), b.params(s.channel, txNotify)...)
		if err != nil {
			return store.InsertResult{}, fmt.Errorf("insert job: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return store.InsertResult{}, fmt.Errorf("insert job: %w", err)
		}
		if len(ids) == 0 {
			// Another node's insert took the key first: look again.
			continue
		}
		if len(unmet) > 0 {
			if _, err := q.Exec(ctx, `INSERT INTO drover_job_deps (dep_id, job_id)
				SELECT d, $2 FROM unnest($1::bigint[]) AS d ON CONFLICT DO NOTHING`, unmet, ids[0]); err != nil {
				return store.InsertResult{}, fmt.Errorf("record dependencies: %w", err)
			}
		}
		return store.InsertResult{Job: store.NewJob(ids[0], in, state)}, nil
	}
	return store.InsertResult{}, fmt.Errorf("insert job with unique key %q: the key keeps changing hands: %w", in.UniqueKey, job.ErrConflict)
}

// unmetDeps returns the dependencies of in that are not complete yet, or a
// validation error naming the first that does not exist.
func (s *Store) unmetDeps(ctx context.Context, q querier, in *job.Insert, idx int, many bool) ([]int64, error) {
	if len(in.DependsOn) == 0 {
		return nil, nil
	}
	want := make([]int64, len(in.DependsOn))
	for i, d := range in.DependsOn {
		want[i] = int64(d)
	}
	rows, err := q.Query(ctx, `SELECT id, state FROM drover_jobs WHERE id = ANY($1::bigint[]) FOR SHARE`, want)
	if err != nil {
		return nil, fmt.Errorf("look up dependencies: %w", err)
	}
	states := map[int64]string{}
	var id int64
	var st string
	_, err = pgx.ForEachRow(rows, []any{&id, &st}, func() error {
		states[id] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up dependencies: %w", err)
	}
	var unmet []int64
	for i, d := range want {
		st, ok := states[d]
		if !ok {
			field := fmt.Sprintf("depends_on[%d]", i)
			if many {
				field = fmt.Sprintf("jobs[%d].%s", idx, field)
			}
			return nil, &job.ValidationError{Field: field, Message: fmt.Sprintf("job %d does not exist", d)}
		}
		if job.State(st) != job.StateCompleted && !slices.Contains(unmet, d) {
			unmet = append(unmet, d)
		}
	}
	return unmet, nil
}

// InsertIdempotent implements store.Store. A transaction-scoped advisory
// lock on the key serializes two requests with one key, on any node.
func (s *Store) InsertIdempotent(ctx context.Context, p store.IdempotentInsertParams) (*store.IdempotentInsertResult, error) {
	if p.Key == "" || p.Render == nil {
		return nil, &job.ValidationError{Field: "Idempotency-Key", Message: "a key and a renderer are required"}
	}
	now := job.Truncate(p.Now)
	var out *store.IdempotentInsertResult
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 1))`, "drover_idem:"+p.Key); err != nil {
			return err
		}
		var hash string
		var status int
		var body []byte
		err := tx.QueryRow(ctx, `SELECT request_hash, status, body FROM drover_idempotency_keys
			WHERE key = $1 AND created_at >= $2`, p.Key, p.Since).Scan(&hash, &status, &body)
		switch {
		case err == nil && hash != p.RequestHash:
			return fmt.Errorf("idempotency key %q: %w", p.Key, job.ErrIdempotencyMismatch)
		case err == nil:
			out = &store.IdempotentInsertResult{Response: store.StoredResponse{Status: status, Body: body}, Replayed: true}
			return nil
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("look up idempotency key: %w", err)
		}
		res, err := s.insert(ctx, tx, p.Jobs, now, false)
		if err != nil {
			return err
		}
		resp, err := p.Render(res)
		if err != nil {
			return err
		}
		// An expired record with the same key is replaced.
		if _, err := tx.Exec(ctx, `INSERT INTO drover_idempotency_keys (key, request_hash, status, body, created_at)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key) DO UPDATE SET request_hash = excluded.request_hash,
			status = excluded.status, body = excluded.body, created_at = excluded.created_at`,
			p.Key, p.RequestHash, resp.Status, resp.Body, now); err != nil {
			return fmt.Errorf("record idempotency key: %w", err)
		}
		out = &store.IdempotentInsertResult{Results: res, Response: resp}
		return nil
	})
	if err == nil && !out.Replayed {
		s.announceInserted(out.Results)
	}
	return out, err
}

// PruneIdempotencyKeys implements store.Store.
func (s *Store) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	var n int64
	err := s.retry(ctx, func() error {
		tag, err := s.pool.Exec(ctx, `DELETE FROM drover_idempotency_keys WHERE key IN (
			SELECT key FROM drover_idempotency_keys WHERE created_at < $1 ORDER BY created_at LIMIT $2
			FOR UPDATE SKIP LOCKED)`, job.Truncate(before), max(limit, 1))
		n = tag.RowsAffected()
		return err
	})
	return int(n), err
}

// leaseSQL leases up to $2 jobs of the queues $1 that are not paused: each
// queue's first jobs in fetch order are locked with SKIP LOCKED (so
// concurrent leases on any node pass each other by), the best $2 of them
// are taken, and each gets a fresh random token. A job with a timeout gets
// no lease past it.
//
// The rows are updated through "j.id = ANY(ARRAY(SELECT id FROM cand))",
// which is always a primary-key lookup per id. Joined as "FROM cand", the
// generic plan (which guesses that LIMIT $2 keeps a tenth of the table)
// hash-joined the candidates with a sequential scan of the whole table
// once statistics showed a large backlog: W3 fell from 15,000 to 1,100
// jobs/s.
const leaseSQL = `WITH q AS (
	SELECT qn FROM unnest($1::text[]) AS qn
	WHERE NOT EXISTS (SELECT 1 FROM drover_queues p WHERE p.name = qn AND p.paused)
), cand AS (
	SELECT c.id FROM q CROSS JOIN LATERAL (
		SELECT id, priority, scheduled_at FROM drover_jobs
		WHERE state = 'available' AND queue = q.qn
		ORDER BY priority, scheduled_at, id
		LIMIT $2 FOR UPDATE SKIP LOCKED
	) AS c
	ORDER BY c.priority, c.scheduled_at, c.id
	LIMIT $2
)
UPDATE drover_jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = $3::timestamptz,
	attempted_by = $4, lease_token = replace(gen_random_uuid()::text, '-', ''),
	lease_expires_at = CASE WHEN j.timeout_us > 0 AND $3::timestamptz + j.timeout_us * interval '1 microsecond' < $5::timestamptz
		THEN $3::timestamptz + j.timeout_us * interval '1 microsecond' ELSE $5::timestamptz END,
	settled = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM cand))
RETURNING ` + jobCols

// Lease implements store.Store.
func (s *Store) Lease(ctx context.Context, p store.LeaseParams) ([]*job.Job, error) {
	if p.Limit <= 0 || len(p.Queues) == 0 {
		return nil, nil
	}
	now := job.Truncate(p.Now)
	exp := now.Add(p.LeaseFor)
	queues := slices.Compact(slices.Sorted(slices.Values(p.Queues)))
	var out []*job.Job
	err := s.retry(ctx, func() error {
		var err error
		out, err = collect(s.pool.Query(ctx, leaseSQL, queues, p.Limit, now, store.CleanText(p.Worker), exp))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	store.SortFetchOrder(out)
	return out, nil
}

// settleError explains why a settle by (id, token) matched no running job:
// the job is missing, the token already settled it the same way (an
// idempotent repeat: the job is returned), or the lease is stale.
func (s *Store) settleError(ctx context.Context, q querier, id job.ID, token, how string) (*job.Job, error) {
	var state string
	var tok, settled *string
	err := q.QueryRow(ctx, `SELECT state, lease_token, settled FROM drover_jobs WHERE id = $1`, int64(id)).Scan(&state, &tok, &settled)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	if tok != nil && *tok == token && settled != nil && *settled == how {
		j, err := s.get(ctx, q, id, false)
		if err != nil {
			return nil, err
		}
		j.LeaseToken = ""
		return j, nil
	}
	return nil, fmt.Errorf("job %d is %s: %w", id, state, job.ErrLeaseLost)
}

// get reads one job, locking it FOR UPDATE when lock is set.
func (s *Store) get(ctx context.Context, q querier, id job.ID, lock bool) (*job.Job, error) {
	sql := `SELECT ` + jobCols + ` FROM drover_jobs j WHERE j.id = $1`
	if lock {
		sql += ` FOR UPDATE`
	}
	j, err := scanJob(q.QueryRow(ctx, sql, int64(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %d: %w", id, job.ErrNotFound)
	}
	return j, err
}

// Heartbeat implements store.Store.
func (s *Store) Heartbeat(ctx context.Context, p store.HeartbeatParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.retry(ctx, func() error {
		jobs, err := collect(s.pool.Query(ctx, `UPDATE drover_jobs j SET lease_expires_at =
			CASE WHEN j.timeout_us > 0 AND j.attempted_at + j.timeout_us * interval '1 microsecond' < $4::timestamptz
			THEN j.attempted_at + j.timeout_us * interval '1 microsecond' ELSE $4::timestamptz END
			WHERE j.id = $2 AND j.lease_token = $3 AND j.state = 'running' AND `+inTime+` RETURNING `+jobCols,
			now, int64(p.ID), p.LeaseToken, now.Add(p.LeaseFor)))
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			_, err := s.settleError(ctx, s.pool, p.ID, p.LeaseToken, "\x00never")
			return err
		}
		out = jobs[0]
		return nil
	})
	return out, err
}

// completeSQL completes running jobs by (id, token) in one statement and
// returns what store.Store.Complete promises of each.
const completeSQL = completeUpdate + `RETURNING j.id, j.kind, j.queue, j.attempt, j.finalized_at, j.output`

// completeFullSQL is completeSQL returning whole rows: for one job (an API
// call, which answers with the whole job) that costs less than a read
// after it.
const completeFullSQL = completeUpdate + `RETURNING ` + jobCols

// completeUpdate looks its jobs up by primary key, whatever the
// statistics: "j.id = ANY($2)" is an index condition on the key, and the
// state test is written "(j.state = 'running') IS TRUE" so that it cannot
// be one on drover_jobs_state. A generic plan made while statistics
// showed few running jobs (an empty table, or one analyzed while its
// backlog waited) scanned every 'running' entry of drover_jobs_state,
// dead versions included, and filtered them by id: a cost that grew with
// every job the table had held. The same holds for resolveSQL and the
// batch failure.
const completeUpdate = `UPDATE drover_jobs j SET state = 'completed', finalized_at = $1::timestamptz,
	output = c.output::json, lease_expires_at = NULL, settled = 'complete',
	unique_key = CASE WHEN j.unique_by_period THEN j.unique_key END
FROM unnest($2::bigint[], $3::text[], $4::text[]) AS c(id, token, output)
WHERE j.id = ANY($2::bigint[]) AND j.id = c.id AND j.lease_token = c.token AND (j.state = 'running') IS TRUE AND ` + inTime + `
`

// resolveSQL counts the completed jobs among $1 as done for the jobs that
// wait on them, makes those whose last dependency it was ready, and
// NOTIFYs the queues that gained available jobs. It runs in the
// completion's transaction, after completeSQL.
const resolveSQL = `WITH d AS (
	DELETE FROM drover_job_deps x WHERE x.dep_id = ANY($1::bigint[])
		AND EXISTS (SELECT 1 FROM drover_jobs j WHERE j.id = x.dep_id AND j.id = ANY($1::bigint[]) AND (j.state = 'completed') IS TRUE)
	RETURNING x.job_id
), n AS (
	SELECT job_id, count(*)::integer AS n FROM d GROUP BY job_id
), u AS (
	UPDATE drover_jobs j SET pending_deps = j.pending_deps - n.n,
		state = CASE WHEN j.pending_deps - n.n > 0 THEN j.state
			WHEN j.scheduled_at > $2::timestamptz THEN 'scheduled' ELSE 'available' END
	FROM n WHERE j.id = n.job_id AND (j.state = 'pending') IS TRUE
	RETURNING j.queue, j.state
)
SELECT count(pg_notify($3, n || '||' || q))
FROM (SELECT queue AS q, count(*) AS n FROM u WHERE state = 'available' GROUP BY queue) AS x`

// Complete implements store.Store. The completions and the release of
// their dependants go in one round trip (a pipelined batch, which
// PostgreSQL runs as one implicit transaction).
func (s *Store) Complete(ctx context.Context, p store.CompleteParams) ([]store.SettleResult, error) {
	now := job.Truncate(p.Now)
	out := make([]store.SettleResult, len(p.Jobs))
	if len(p.Jobs) == 0 {
		return out, nil
	}
	ids := make([]int64, len(p.Jobs))
	tokens := make([]string, len(p.Jobs))
	outputs := make([]*string, len(p.Jobs))
	for i, c := range p.Jobs {
		ids[i], tokens[i], outputs[i] = int64(c.ID), c.LeaseToken, textArg(c.Output)
	}
	done := map[int64]*job.Job{}
	err := s.retry(ctx, func() error {
		clear(done)
		b := &pgx.Batch{}
		full := len(ids) == 1
		if full {
			b.Queue(completeFullSQL, now, ids, tokens, outputs)
		} else {
			b.Queue(completeSQL, now, ids, tokens, outputs)
		}
		b.Queue(resolveSQL, ids, now, s.channel)
		br := s.pool.SendBatch(ctx, b)
		rows, err := br.Query()
		if err != nil {
			br.Close()
			return err
		}
		if full {
			jobs, err := collect(rows, nil)
			if err != nil {
				br.Close()
				return err
			}
			for _, j := range jobs {
				j.LeaseToken = ""
				done[int64(j.ID)] = j
			}
			if _, err := br.Exec(); err != nil {
				br.Close()
				return err
			}
			return br.Close()
		}
		var fin time.Time
		var output []byte
		var jid int64
		var kind, queue string
		var attempt int
		_, err = pgx.ForEachRow(rows, []any{&jid, &kind, &queue, &attempt, &fin, &output}, func() error {
			f := fin.UTC()
			j := &job.Job{ID: job.ID(jid), Kind: kind, Queue: queue, State: job.StateCompleted, Attempt: attempt, FinalizedAt: &f}
			if len(output) > 0 {
				j.Output = slices.Clone(output)
			}
			done[jid] = j
			return nil
		})
		if err != nil {
			br.Close()
			return err
		}
		if _, err := br.Exec(); err != nil {
			br.Close()
			return err
		}
		return br.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("complete jobs: %w", err)
	}
	for i, c := range p.Jobs {
		if j, ok := done[int64(c.ID)]; ok {
			out[i] = store.SettleResult{Job: j}
			delete(done, int64(c.ID)) // a repeat of the same job in this call is an idempotent repeat
			continue
		}
		j, err := s.settleError(ctx, s.pool, c.ID, c.LeaseToken, "complete")
		if err != nil && !store.IsSettleError(err) {
			return nil, fmt.Errorf("complete job %d: %w", c.ID, unavailable(err))
		}
		out[i] = store.SettleResult{Job: j, Err: err}
	}
	return out, nil
}

// runningJob reads job id for a settle by token, or explains why not.
func (s *Store) runningJob(ctx context.Context, q querier, id job.ID, token, how string) (*job.Job, bool, error) {
	j, err := s.get(ctx, q, id, false)
	if err != nil {
		return nil, false, err
	}
	if j.State == job.StateRunning && j.LeaseToken == token {
		return j, true, nil
	}
	done, err := s.settleError(ctx, q, id, token, how)
	return done, false, err
}

func errorEntry(attempt int, now time.Time, msg, detail string) (*string, error) {
	e, err := store.ErrorEntry(attempt, now, msg, detail)
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// settle moves job j to state next, appending entry (when set) to its
// error history and recording how its lease settled. Either the caller's
// transaction has j locked, or fence is j's lease token and the update
// happens only while that lease is live (else the settle is explained by
// settleError).
func (s *Store) settle(ctx context.Context, q querier, j *job.Job, next job.State, sched, now time.Time, entry *string, how, fence string) (*job.Job, error) {
	var finalized *time.Time
	if next.Final() {
		finalized = &now
	}
	sched = store.NextScheduledAt(j, next, sched, now)
	release := !job.HoldsUnique(next, true)
	attemptDelta := 0
	if how == "snooze" {
		attemptDelta = -1
	}
	jobs, err := collect(q.Query(ctx, `UPDATE drover_jobs j SET state = $1, scheduled_at = $2,
		finalized_at = $3, lease_expires_at = NULL, settled = $4, attempt = j.attempt + $5,
		errors = CASE WHEN $6::jsonb IS NULL THEN j.errors ELSE coalesce(j.errors, '[]'::jsonb) || jsonb_build_array($6::jsonb) END,
		unique_key = CASE WHEN $7 THEN NULL ELSE j.unique_key END
		WHERE j.id = $8 AND ($9 = '' OR (j.lease_token = $9 AND j.state = 'running')) RETURNING `+jobCols,
		string(next), sched, finalized, nullString(how), attemptDelta, entry, release, int64(j.ID), fence))
	if err != nil {
		return nil, fmt.Errorf("settle job %d: %w", j.ID, err)
	}
	if len(jobs) == 0 && fence != "" {
		return s.settleError(ctx, q, j.ID, fence, how)
	}
	if len(jobs) == 0 {
		return nil, fmt.Errorf("job %d: %w", j.ID, job.ErrNotFound)
	}
	out := jobs[0]
	out.LeaseToken = ""
	return out, nil
}

// Snooze implements store.Store.
func (s *Store) Snooze(ctx context.Context, p store.SnoozeParams) (*job.Job, error) {
	if p.Delay < 0 {
		return nil, &job.ValidationError{Field: "delay", Message: "must not be negative"}
	}
	now := job.Truncate(p.Now)
	var out *job.Job
	// Two round trips, fenced by the token, as Fail.
	err := s.retry(ctx, func() error {
		j, live, err := s.runningJob(ctx, s.pool, p.ID, p.LeaseToken, "snooze")
		if err != nil || !live {
			out = j
			return err
		}
		at := job.Truncate(now.Add(p.Delay))
		out, err = s.settle(ctx, s.pool, j, job.ReadyState(at, now), at, now, nil, "snooze", p.LeaseToken)
		return err
	})
	s.announceJobs(out)
	return out, err
}

// Cancel implements store.Store.
func (s *Store) Cancel(ctx context.Context, p store.CancelParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		j, err := s.get(ctx, tx, p.ID, true)
		if err != nil {
			return err
		}
		if j.State == job.StateCancelled {
			j.LeaseToken = ""
			out = j
			return nil
		}
		if !job.CanCancel(j.State) {
			return fmt.Errorf("cancel job %d: it is %s: %w", p.ID, j.State, job.ErrInvalidState)
		}
		if j.State == job.StatePending {
			if _, err := tx.Exec(ctx, `DELETE FROM drover_job_deps WHERE job_id = $1`, int64(j.ID)); err != nil {
				return err
			}
		}
		out, err = s.settle(ctx, tx, j, job.StateCancelled, j.ScheduledAt, now, nil, "", "")
		return err
	})
	return out, err
}

// Retry implements store.Store.
func (s *Store) Retry(ctx context.Context, p store.RetryParams) (*job.Job, error) {
	now := job.Truncate(p.Now)
	var out *job.Job
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		j, err := s.get(ctx, tx, p.ID, true)
		if err != nil {
			return err
		}
		j.LeaseToken = ""
		if j.State == job.StateAvailable {
			out = j
			return nil
		}
		if !job.CanRetry(j.State) {
			return fmt.Errorf("retry job %d: it is %s: %w", p.ID, j.State, job.ErrInvalidState)
		}
		jobs, err := collect(tx.Query(ctx, `UPDATE drover_jobs j SET state = 'available', scheduled_at = $1,
			finalized_at = NULL, max_attempts = greatest(j.max_attempts, j.attempt + 1), settled = NULL,
			lease_token = NULL, lease_expires_at = NULL
			WHERE j.id = $2 RETURNING `+jobCols, now, int64(p.ID)))
		if err != nil {
			return err
		}
		if len(jobs) == 0 {
			return fmt.Errorf("job %d: %w", p.ID, job.ErrNotFound)
		}
		out = jobs[0]
		out.LeaseToken = ""
		return nil
	})
	s.announceJobs(out)
	return out, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, p store.DeleteParams) error {
	return s.inTx(ctx, func(tx pgx.Tx) error {
		j, err := s.get(ctx, tx, p.ID, true)
		if err != nil {
			return err
		}
		if !job.CanDelete(j.State) {
			return fmt.Errorf("delete job %d: it is %s, cancel it first: %w", p.ID, j.State, job.ErrInvalidState)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM drover_job_deps WHERE job_id = $1`, int64(p.ID)); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM drover_jobs WHERE id = $1`, int64(p.ID))
		return err
	})
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, id job.ID) (*job.Job, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	j, err := s.get(ctx, s.pool, id, false)
	if err != nil {
		if job.Code(err) == "not_found" {
			return nil, err
		}
		return nil, fmt.Errorf("get job %d: %w", id, unavailable(err))
	}
	j.LeaseToken = ""
	return j, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, p store.ListParams) (*store.ListResult, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	limit := p.Limit
	if limit <= 0 || limit > store.MaxListLimit {
		limit = store.MaxListLimit
	}
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(p.States) > 0 {
		states := make([]string, len(p.States))
		for i, st := range p.States {
			states[i] = string(st)
		}
		where = append(where, "j.state = ANY("+arg(states)+"::text[])")
		if !slices.Contains(states, string(job.StateAvailable)) {
			// Lets the planner see that the partial index drover_jobs_state applies.
			where = append(where, "j.state <> 'available'")
		}
	}
	if len(p.Kinds) > 0 {
		where = append(where, "j.kind = ANY("+arg(p.Kinds)+"::text[])")
	}
	if len(p.Queues) > 0 {
		where = append(where, "j.queue = ANY("+arg(p.Queues)+"::text[])")
	}
	if p.CreatedBy != "" {
		where = append(where, "j.created_by = "+arg(p.CreatedBy))
	}
	if p.Tag != "" {
		where = append(where, arg(p.Tag)+"::text = ANY(j.tags)")
	}
	order := "ASC"
	if p.Desc {
		order = "DESC"
	}
	if p.After != 0 {
		if p.Desc {
			where = append(where, "j.id < "+arg(int64(p.After)))
		} else {
			where = append(where, "j.id > "+arg(int64(p.After)))
		}
	}
	q := `SELECT ` + jobCols + ` FROM drover_jobs j`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY j.id " + order + " LIMIT " + arg(limit+1)
	jobs, err := collect(s.pool.Query(ctx, q, args...))
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", unavailable(err))
	}
	return store.Page(jobs, limit), nil
}

// Promote implements store.Store.
func (s *Store) Promote(ctx context.Context, p store.PromoteParams) (map[string]int, error) {
	now := job.Truncate(p.Now)
	out := map[string]int{}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		clear(out)
		rows, err := tx.Query(ctx, `UPDATE drover_jobs j SET state = 'available'
			FROM (SELECT id FROM drover_jobs WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= $1
				ORDER BY scheduled_at LIMIT $2 FOR UPDATE SKIP LOCKED) AS due
			WHERE j.id = due.id RETURNING j.queue`, now, max(p.Limit, 1))
		if err != nil {
			return err
		}
		var q string
		if _, err := pgx.ForEachRow(rows, []any{&q}, func() error { out[q]++; return nil }); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.announce(out)
	return out, nil
}

// Rescue implements store.Store.
func (s *Store) Rescue(ctx context.Context, p store.RescueParams) ([]*job.Job, error) {
	now := job.Truncate(p.Now)
	var out []*job.Job
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		out = nil
		expired, err := collect(tx.Query(ctx, `SELECT `+jobCols+` FROM drover_jobs j
			WHERE j.state = 'running' AND j.state <> 'available' AND j.lease_expires_at < $1
			ORDER BY j.id LIMIT $2 FOR UPDATE SKIP LOCKED`, now, max(p.Limit, 1)))
		if err != nil {
			return err
		}
		for _, j := range expired {
			msg, next, at := store.RescueOutcome(j, now)
			entry, err := errorEntry(j.Attempt, now, msg, "")
			if err != nil {
				return err
			}
			r, err := s.settle(ctx, tx, j, next, at, now, entry, "rescue", "")
			if err != nil {
				return err
			}
			out = append(out, r)
		}
		return nil
	})
	if err == nil {
		s.announceJobs(out...)
	}
	return out, err
}

// Prune implements store.Store.
func (s *Store) Prune(ctx context.Context, p store.PruneParams) (int, error) {
	states := store.PruneStates(p.States)
	if len(states) == 0 {
		return 0, nil
	}
	var n int
	err := s.retry(ctx, func() error {
		// Oldest first by finalized_at (an index), so that a long tail of
		// recent jobs never hides old ones.
		return s.pool.QueryRow(ctx, `WITH gone AS (
			DELETE FROM drover_jobs WHERE id IN (
				SELECT id FROM drover_jobs WHERE finalized_at < $1 AND state = ANY($2::text[])
				ORDER BY finalized_at LIMIT $3 FOR UPDATE SKIP LOCKED)
			RETURNING id
		), deps AS (
			DELETE FROM drover_job_deps WHERE job_id IN (SELECT id FROM gone)
		)
		SELECT count(*) FROM gone`, job.Truncate(p.Before), states, max(p.Limit, 1)).Scan(&n)
	})
	return n, err
}

// SetQueuePaused implements store.Store.
func (s *Store) SetQueuePaused(ctx context.Context, p store.QueuePauseParams) error {
	if err := job.ValidateName(p.Queue); err != nil {
		return &job.ValidationError{Field: "queue", Message: err.Error()}
	}
	err := s.retry(ctx, func() error {
		_, err := s.pool.Exec(ctx, `INSERT INTO drover_queues (name, paused, updated_at) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at`,
			p.Queue, p.Paused, job.Truncate(p.Now))
		return err
	})
	if err == nil && !p.Paused {
		s.announce(map[string]int{p.Queue: -1})
	}
	return err
}

// Queues implements store.Store. Counts are exact: one scan of the jobs
// table grouped by queue and state.
func (s *Store) Queues(ctx context.Context) ([]store.QueueInfo, error) {
	if err := s.live(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT coalesce(c.queue, q.name), coalesce(q.paused, false), c.state, coalesce(c.n, 0)
		FROM (SELECT queue, state, count(*) AS n FROM drover_jobs GROUP BY queue, state) AS c
		FULL JOIN drover_queues q ON q.name = c.queue
		ORDER BY coalesce(c.queue, q.name) COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("queues: %w", unavailable(err))
	}
	var out []store.QueueInfo
	var name string
	var paused bool
	var state *string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&name, &paused, &state, &n}, func() error {
		if len(out) == 0 || out[len(out)-1].Name != name {
			out = append(out, store.QueueInfo{Name: name, Paused: paused, Counts: map[job.State]int{}})
		}
		if state != nil && n > 0 {
			out[len(out)-1].Counts[job.State(*state)] = n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queues: %w", unavailable(err))
	}
	return out, nil
}

// copyMinRows is the batch size from which plain inserts use COPY: its
// extra round trips (ids first, then the copy) pay off against the
// per-row work of a multi-row INSERT from arrays.
const copyMinRows = 64

// copyColumns are the columns copyRows writes, in order.
var copyColumns = []string{"id", "state", "queue", "kind", "priority", "scheduled_at", "args", "max_attempts",
	"timeout_us", "tags", "metadata", "created_at", "created_by"}

// copyRows inserts plain jobs with COPY: it takes their ids from the
// identity sequence first (in order, so ids follow the batch), then copies
// the rows in binary. COPY is one statement, atomic on its own.
func (s *Store) copyRows(ctx context.Context, q querier, ins []*job.Insert, now time.Time, txNotify bool) ([]store.InsertResult, error) {
	rows, err := q.Query(ctx, `SELECT nextval($1::regclass) FROM generate_series(1, $2)`, s.idSeq, len(ins))
	if err != nil {
		return nil, fmt.Errorf("insert jobs: allocate ids: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("insert jobs: allocate ids: %w", err)
	}
	slices.Sort(ids)
	states := make([]job.State, len(ins))
	counts := map[string]int{}
	src := make([][]any, len(ins))
	for k, in := range ins {
		states[k] = job.InitialState(in.ScheduledAt, now, false)
		if states[k] == job.StateAvailable {
			counts[in.Queue]++
		}
		var tags []string
		if len(in.Tags) > 0 {
			tags = in.Tags
		}
		src[k] = []any{ids[k], string(states[k]), in.Queue, in.Kind, int16(in.Priority), in.ScheduledAt, //nolint:gosec // G115: priority is 1..9
			string(in.Args), int32(in.MaxAttempts), in.Timeout.Microseconds(), tags, textArg(in.Metadata), //nolint:gosec // G115: validated
			in.CreatedAt, nullString(in.CreatedBy)}
	}
	if _, err := q.CopyFrom(ctx, pgx.Identifier{"drover_jobs"}, copyColumns, pgx.CopyFromRows(src)); err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	if txNotify && len(counts) > 0 {
		queues := make([]string, 0, len(counts))
		ns := make([]int32, 0, len(counts))
		for q, n := range counts {
			queues = append(queues, q)
			ns = append(ns, int32(n)) //nolint:gosec // G115: at most a batch
		}
		if _, err := q.Exec(ctx, `SELECT pg_notify($1, n || '||' || q) FROM unnest($2::text[], $3::integer[]) AS u(q, n)`,
			s.channel, queues, ns); err != nil {
			return nil, fmt.Errorf("insert jobs: notify: %w", err)
		}
	}
	out := make([]store.InsertResult, len(ins))
	for k, in := range ins {
		out[k] = store.InsertResult{Job: store.NewJob(ids[k], in, states[k])}
	}
	return out, nil
}

// insertSingleSQL inserts one plain job: the common case of an API
// enqueue, cheaper for PostgreSQL than unpacking one-element arrays.
const insertSingleSQL = `INSERT INTO drover_jobs (state, queue, kind, priority, scheduled_at, args, max_attempts,
	timeout_us, tags, metadata, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6::json, $7, $8, $9, $10::json, $11, $12) RETURNING id`

// insertSingle inserts one plain job with insertSingleSQL.
func (s *Store) insertSingle(ctx context.Context, q querier, in *job.Insert, now time.Time) ([]store.InsertResult, error) {
	state := job.InitialState(in.ScheduledAt, now, false)
	var tags []string
	if len(in.Tags) > 0 {
		tags = in.Tags
	}
	var id int64
	err := q.QueryRow(ctx, insertSingleSQL, string(state), in.Queue, in.Kind, int16(in.Priority), in.ScheduledAt, //nolint:gosec // G115: priority is 1..9
		string(in.Args), int32(in.MaxAttempts), in.Timeout.Microseconds(), tags, textArg(in.Metadata), //nolint:gosec // G115: validated
		in.CreatedAt, nullString(in.CreatedBy)).Scan(&id)
	if err != nil {
		return nil, fmt.Errorf("insert job: %w", err)
	}
	return []store.InsertResult{{Job: store.NewJob(id, in, state)}}, nil
}
