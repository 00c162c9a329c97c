package store

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/job"
)

// The decisions below are the same for every store; stores call them so
// that the rules live in one place and only the storage differs.

// NewJob returns the job that inserting in as id in state made.
func NewJob(id int64, in *job.Insert, state job.State) *job.Job {
	return &job.Job{
		ID:          job.ID(id),
		Kind:        in.Kind,
		Queue:       in.Queue,
		Args:        in.Args,
		Priority:    in.Priority,
		State:       state,
		MaxAttempts: in.MaxAttempts,
		Timeout:     in.Timeout,
		UniqueKey:   in.UniqueKey,
		Tags:        in.Tags,
		Metadata:    in.Metadata,
		DependsOn:   in.DependsOn,
		CreatedAt:   in.CreatedAt,
		CreatedBy:   in.CreatedBy,
		ScheduledAt: in.ScheduledAt,
	}
}

// FailOutcome decides where running job j goes when its attempt fails as
// p says, and when it runs next.
func FailOutcome(j *job.Job, p FailParams, now time.Time) (job.State, time.Time) {
	retryAt := p.RetryAt
	if retryAt.IsZero() {
		backoff := p.Backoff
		if backoff == nil {
			backoff = func(j *job.Job) time.Duration { return job.DefaultBackoff(j.Attempt) }
		}
		retryAt = now.Add(backoff(j))
	}
	retryAt = job.Truncate(retryAt)
	next := job.FailedState(j.Attempt, j.MaxAttempts, p.Discard, retryAt, now)
	if p.Cancel {
		next = job.StateCancelled
	}
	return next, retryAt
}

// RescueOutcome decides what happens to running job j whose lease expired
// before now: the message recorded, the next state and its run time. An
// attempt that outran its timeout is a failure like any other, retried
// after the backoff; a plain expiry is retried at once.
func RescueOutcome(j *job.Job, now time.Time) (string, job.State, time.Time) {
	if j.Timeout > 0 && j.AttemptedAt != nil && !j.AttemptedAt.Add(j.Timeout).After(now) {
		at := job.Truncate(now.Add(job.DefaultBackoff(j.Attempt)))
		return TimedOutMessage(j.Timeout), job.FailedState(j.Attempt, j.MaxAttempts, false, at, now), at
	}
	return LeaseExpiredMessage, job.RescuedState(j.Attempt, j.MaxAttempts), now
}

// NextScheduledAt is the scheduled_at of job j settling into state next:
// at for a retry or a snooze that waits, now for a job available again,
// and j's own otherwise.
func NextScheduledAt(j *job.Job, next job.State, at, now time.Time) time.Time {
	switch next {
	case job.StateRetryable, job.StateScheduled:
		return at
	case job.StateAvailable:
		return now
	case job.StatePending, job.StateRunning, job.StateCompleted, job.StateCancelled, job.StateDiscarded:
	}
	return j.ScheduledAt
}

// ErrorEntry encodes one entry of a job's error history, with the
// message and detail truncated to their limits.
func ErrorEntry(attempt int, now time.Time, msg, detail string) (string, error) {
	b, err := json.Marshal(job.AttemptError{
		Attempt: attempt,
		At:      now,
		Message: job.TruncateUTF8(CleanText(msg), job.MaxErrorMessageBytes),
		Detail:  job.TruncateUTF8(CleanText(detail), job.MaxErrorDetailBytes),
	})
	return string(b), err
}

// CleanText makes free text from workers and operators (error messages,
// worker and token names) storable alike in every store: invalid UTF-8
// and NUL bytes, which PostgreSQL's text refuses, become U+FFFD.
func CleanText(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// PruneStates returns the final states among states, as strings: all of
// them when states is empty.
func PruneStates(states []job.State) []string {
	if len(states) == 0 {
		return []string{string(job.StateCompleted), string(job.StateCancelled), string(job.StateDiscarded)}
	}
	var out []string
	for _, st := range states {
		if st.Final() {
			out = append(out, string(st))
		}
	}
	return out
}

// IsSettleError reports whether err is a per-job settle refusal (the job
// is gone or the lease is stale) rather than a failure of the store.
func IsSettleError(err error) bool {
	return job.Code(err) == "not_found" || job.Code(err) == "lease_lost"
}

// SortFetchOrder sorts jobs in fetch order.
func SortFetchOrder(jobs []*job.Job) {
	slices.SortFunc(jobs, func(a, b *job.Job) int {
		if job.FetchLess(a, b) {
			return -1
		}
		return 1
	})
}

// Page makes one page of List from up to limit+1 jobs read in list
// order: the extra job, when there is one, says that a next page exists.
// Lease tokens are removed.
func Page(jobs []*job.Job, limit int) *ListResult {
	res := &ListResult{Jobs: jobs}
	if len(jobs) > limit {
		res.Jobs = jobs[:limit]
		res.Next = jobs[limit-1].ID
	}
	for _, j := range res.Jobs {
		j.LeaseToken = ""
	}
	return res
}
