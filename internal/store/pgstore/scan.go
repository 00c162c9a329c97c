package pgstore

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/droverhq/drover/internal/job"
)

// jobCols is the column list that scanJob reads, in order. Queries that
// join name the table j.
const jobCols = `j.id, j.state, j.queue, j.kind, j.priority, j.scheduled_at, j.args, j.attempt, j.max_attempts,
	j.timeout_us, j.unique_key, j.tags, j.metadata, j.depends_on, j.output, j.errors, j.created_at,
	j.attempted_at, j.finalized_at, j.attempted_by, j.lease_token, j.lease_expires_at, j.created_by`

// scanJob reads one row of jobCols.
func scanJob(r pgx.Row) (*job.Job, error) {
	var (
		j                              job.Job
		state                          string
		priority                       int16
		timeoutUS                      int64
		uniqueKey, by, token, cby      *string
		args, metadata, output, errs   []byte
		deps                           []int64
		attempted, finalized, leaseExp *time.Time
	)
	err := r.Scan(&j.ID, &state, &j.Queue, &j.Kind, &priority, &j.ScheduledAt, &args, &j.Attempt,
		&j.MaxAttempts, &timeoutUS, &uniqueKey, &j.Tags, &metadata, &deps, &output, &errs,
		&j.CreatedAt, &attempted, &finalized, &by, &token, &leaseExp, &cby)
	if err != nil {
		return nil, err
	}
	j.State = job.State(state)
	j.Priority = int(priority)
	j.Args = args
	j.ScheduledAt = j.ScheduledAt.UTC()
	j.CreatedAt = j.CreatedAt.UTC()
	j.Timeout = time.Duration(timeoutUS) * time.Microsecond
	j.UniqueKey = deref(uniqueKey)
	j.AttemptedBy = deref(by)
	j.CreatedBy = deref(cby)
	j.LeaseToken = deref(token)
	j.AttemptedAt = utc(attempted)
	j.FinalizedAt = utc(finalized)
	j.LeaseExpiresAt = utc(leaseExp)
	if len(j.Tags) == 0 {
		j.Tags = nil
	}
	if len(metadata) > 0 {
		j.Metadata = metadata
	}
	if len(output) > 0 {
		j.Output = output
	}
	for _, d := range deps {
		j.DependsOn = append(j.DependsOn, job.ID(d))
	}
	if len(errs) > 0 {
		if err := json.Unmarshal(errs, &j.Errors); err != nil {
			return nil, fmt.Errorf("job %d: decode errors: %w", j.ID, err)
		}
	}
	return &j, nil
}

// collect reads every row of a jobCols query.
func collect(rows pgx.Rows, err error) ([]*job.Job, error) {
	if err != nil {
		return nil, err
	}
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

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// nullString maps "" to NULL.
func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// textArg passes JSON bytes as text, so that json columns get exactly the
// bytes (pgx would send a []byte as bytea to a json[] parameter).
func textArg(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}
