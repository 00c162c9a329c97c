package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// jobCols is the column list that scanJob reads, in order.
const jobCols = `id, state, queue, kind, priority, scheduled_at, args, attempt, max_attempts,
	timeout_us, unique_key, tags, metadata, depends_on, output, errors, created_at,
	attempted_at, finalized_at, attempted_by, lease_token, lease_expires_at, created_by`

type scanner interface{ Scan(dest ...any) error }

// scanJob reads one row of jobCols.
func scanJob(r scanner) (*job.Job, error) {
	var (
		j                                     job.Job
		state                                 string
		sched, created                        int64
		timeoutUS                             int64
		uniqueKey, tags, deps, by, token, cby sql.NullString
		metadata, output, errs                []byte
		attempted, finalized, leaseExp        sql.NullInt64
	)
	err := r.Scan(&j.ID, &state, &j.Queue, &j.Kind, &j.Priority, &sched, &j.Args, &j.Attempt,
		&j.MaxAttempts, &timeoutUS, &uniqueKey, &tags, &metadata, &deps, &output, &errs,
		&created, &attempted, &finalized, &by, &token, &leaseExp, &cby)
	if err != nil {
		return nil, err
	}
	j.State = job.State(state)
	j.ScheduledAt = fromMicros(sched)
	j.CreatedAt = fromMicros(created)
	j.Timeout = time.Duration(timeoutUS) * time.Microsecond
	j.UniqueKey = uniqueKey.String
	j.AttemptedBy = by.String
	j.CreatedBy = cby.String
	j.LeaseToken = token.String
	j.AttemptedAt = nullTime(attempted)
	j.FinalizedAt = nullTime(finalized)
	j.LeaseExpiresAt = nullTime(leaseExp)
	if len(metadata) > 0 {
		j.Metadata = metadata
	}
	if len(output) > 0 {
		j.Output = output
	}
	if tags.Valid && tags.String != "" {
		if err := json.Unmarshal([]byte(tags.String), &j.Tags); err != nil {
			return nil, fmt.Errorf("job %d: decode tags: %w", j.ID, err)
		}
	}
	if deps.Valid && deps.String != "" {
		if err := json.Unmarshal([]byte(deps.String), &j.DependsOn); err != nil {
			return nil, fmt.Errorf("job %d: decode depends_on: %w", j.ID, err)
		}
	}
	if len(errs) > 0 {
		if err := json.Unmarshal(errs, &j.Errors); err != nil {
			return nil, fmt.Errorf("job %d: decode errors: %w", j.ID, err)
		}
	}
	return &j, nil
}

// queryJobs runs a query of jobCols rows.
func queryJobs(ctx context.Context, q interface {
	QueryContext(context.Context, ...any) (*sql.Rows, error)
}, args ...any) ([]*job.Job, error) {
	rows, err := q.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	return collect(rows)
}

func collect(rows *sql.Rows) ([]*job.Job, error) {
	defer rows.Close()
	var out []*job.Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMicros(v.Int64)
	return &t
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return []byte(b)
}

func jsonOrNil[T any](v []T) (any, error) {
	if len(v) == 0 {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

var errNoRow = sql.ErrNoRows

func isNoRows(err error) bool { return errors.Is(err, errNoRow) }

// scanSettled reads rows of settledCols into completed jobs.
func scanSettled(rows *sql.Rows) ([]*job.Job, error) {
	defer rows.Close()
	var out []*job.Job
	for rows.Next() {
		j := &job.Job{State: job.StateCompleted}
		var fin int64
		var output []byte
		if err := rows.Scan(&j.ID, &j.Kind, &j.Queue, &j.Attempt, &fin, &output); err != nil {
			return nil, err
		}
		t := fromMicros(fin)
		j.FinalizedAt = &t
		if len(output) > 0 {
			j.Output = output
		}
		out = append(out, j)
	}
	return out, rows.Err()
}
