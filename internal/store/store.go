// Package store defines the storage seam: the Store interface that every
// backend implements, and the parameter types of its methods.
//
// The comments on Store are its specification; package storetest is the
// executable form of that specification, and every store must pass it.
//
// Every method takes the current time in its params (Now) instead of reading
// a clock, so that tests and the nodes of a cluster agree on it. Stores keep
// times with microsecond precision in UTC (see job.Truncate).
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// Store is the storage seam. Implementations must be safe for concurrent
// use. Unless a method says otherwise, an error leaves the store unchanged,
// and when a method returns without error its change is durable (it
// survives a crash of the process and of the machine).
type Store interface {
	// Insert stores p.Jobs atomically: all of them or none. A job whose
	// unique key is held by a live job is not inserted; its result holds
	// the existing job and Duplicate is true. A dependency that does not
	// exist fails the whole insert with a *job.ValidationError. Results are
	// in the order of p.Jobs.
	Insert(ctx context.Context, p InsertParams) ([]InsertResult, error)

	// InsertIdempotent is Insert made at most once per idempotency key.
	// The first call with a key inserts p.Jobs, renders the response with
	// p.Render and stores it with the key in the same transaction; a later
	// call with the same key and request hash, while the record is newer
	// than p.Since, inserts nothing and returns the stored response with
	// Replayed set. The same key with another request hash returns
	// job.ErrIdempotencyMismatch.
	InsertIdempotent(ctx context.Context, p IdempotentInsertParams) (*IdempotentInsertResult, error)

	// PruneIdempotencyKeys deletes up to limit idempotency records created
	// before before, and returns how many it deleted.
	PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error)

	// Lease marks up to p.Limit available jobs of p.Queues as running and
	// returns them in fetch order (priority, scheduled_at, id across all the
	// queues). Jobs of paused queues are not leased. Each returned job has
	// its attempt incremented, a new random LeaseToken, AttemptedAt = Now,
	// LeaseExpiresAt = Now + LeaseFor (or Now + the job's Timeout when that
	// is sooner) and AttemptedBy = Worker. No job is
	// returned by two leases while the first lease lives, even when many
	// callers lease at once.
	Lease(ctx context.Context, p LeaseParams) ([]*job.Job, error)

	// Heartbeat extends a live lease to Now + LeaseFor, but never past the
	// attempt's timeout (attempted_at + the job's Timeout), and returns the
	// job. It returns job.ErrLeaseLost when the token is not the job's
	// live lease or the attempt is past its timeout, and job.ErrNotFound
	// when the job does not exist.
	Heartbeat(ctx context.Context, p HeartbeatParams) (*job.Job, error)

	// Complete settles running jobs as completed, each with its optional
	// output, and returns one result per job in the order given: the
	// completed job, or job.ErrLeaseLost (stale token), job.ErrNotFound.
	// For speed the returned job may hold only ID, Kind, Queue, State,
	// Attempt, FinalizedAt and Output (its CreatedAt is then zero); Get
	// returns all of it.
	// Completing again with the token that completed the job returns the
	// job unchanged (the first response may have been lost). An attempt
	// past its timeout cannot complete: job.ErrLeaseLost. Completing a
	// job makes its pending dependants available once all their
	// dependencies are complete. The error return is for failures of the
	// whole call; per-job failures are in the results.
	Complete(ctx context.Context, p CompleteParams) ([]SettleResult, error)

	// Fail records a failed attempt in the job's error history and moves
	// it on as job.FailedState says (or to cancelled when p.Cancel is set).
	// The next run time is p.RetryAt when set, else Now + p.Backoff(job).
	// Failing again with the token that failed it returns the job unchanged.
	// It returns job.ErrLeaseLost for a stale token.
	Fail(ctx context.Context, p FailParams) (*job.Job, error)

	// Snooze re-schedules a running job at Now + Delay without using up an
	// attempt (its attempt count goes back by one). It returns
	// job.ErrLeaseLost for a stale token.
	Snooze(ctx context.Context, p SnoozeParams) (*job.Job, error)

	// Cancel cancels a job that is not final and returns it; a running
	// job's lease is revoked, so its worker's settle is refused. Cancelling
	// a cancelled job returns it unchanged; cancelling a completed or
	// discarded job returns job.ErrInvalidState.
	Cancel(ctx context.Context, p CancelParams) (*job.Job, error)

	// Retry makes a scheduled, retryable or final job available now. A job
	// whose attempts are used up gets one more. Retrying a running or
	// pending job returns job.ErrInvalidState; an available job is
	// returned unchanged.
	Retry(ctx context.Context, p RetryParams) (*job.Job, error)

	// Delete removes a job and its history. Deleting a running job returns
	// job.ErrInvalidState (cancel it first).
	Delete(ctx context.Context, p DeleteParams) error

	// Get returns one job with its error history, without its lease token.
	Get(ctx context.Context, id job.ID) (*job.Job, error)

	// List returns jobs matching the filters, ordered by id (ascending, or
	// descending with Desc), at most Limit of them, starting after the
	// cursor id. Next is the cursor of the following page, zero on the last.
	List(ctx context.Context, p ListParams) (*ListResult, error)

	// Promote makes due jobs available: scheduled and retryable jobs whose
	// scheduled_at is not after Now, at most Limit of them. It returns how
	// many jobs each queue gained.
	Promote(ctx context.Context, p PromoteParams) (map[string]int, error)

	// Rescue settles running jobs whose lease expired before Now, at most
	// Limit of them: each expiry is recorded as a failed attempt, and the
	// job becomes available at once (or discarded with no attempt left, see
	// job.RescuedState). An attempt that outran its job's timeout is
	// recorded as timed out (TimedOutMessage) and retried after the
	// default backoff, as a failure. It returns the rescued jobs in their
	// new state.
	Rescue(ctx context.Context, p RescueParams) ([]*job.Job, error)

	// Prune deletes up to Limit jobs in the final states States (all final
	// states when empty) whose finalized_at is before Before, and returns
	// how many it deleted. Non-final states in States are ignored.
	Prune(ctx context.Context, p PruneParams) (int, error)

	// SetQueuePaused pauses or resumes a queue. A queue need not have
	// jobs to be paused; pausing a paused queue changes nothing.
	SetQueuePaused(ctx context.Context, p QueuePauseParams) error

	// Queues returns every queue that has jobs or was ever paused, sorted
	// by name, with its paused flag and its job count per state.
	Queues(ctx context.Context) ([]QueueInfo, error)

	// CreateToken stores an API token (its hash, never its secret) and
	// returns it with its new id.
	CreateToken(ctx context.Context, p CreateTokenParams) (*TokenRecord, error)

	// GetToken returns one token, revoked or not, or job.ErrNotFound.
	GetToken(ctx context.Context, id int64) (*TokenRecord, error)

	// ListTokens returns every token, revoked ones included, by id.
	ListTokens(ctx context.Context) ([]TokenRecord, error)

	// RevokeToken marks a token revoked at Now; revoking a revoked token
	// changes nothing. It returns job.ErrNotFound for an unknown id.
	RevokeToken(ctx context.Context, p RevokeTokenParams) error

	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error

	// Close releases the store. Calls after Close return job.ErrUnavailable.
	Close() error
}

// ReadyNotifier is implemented by a store that can report jobs made
// available by a change no engine call named: a completion that releases
// the last dependency of another job. The engine registers a hook that
// wakes lease calls waiting on that job's queue, so the dependant starts at
// once rather than at the next poll. The hook runs after the change is
// durable and must not block.
type ReadyNotifier interface {
	SetReadyHook(f func(queue string, n int))
}

// Parker is implemented by a store that can hand jobs to a waiting lease
// call inside the very transaction that makes them available. A lease
// call parks; when a later write (an insert, a promotion, a retry) makes
// jobs available on one of its queues, the store leases for the parked
// call in that write's own transaction, so the job reaches its worker
// after one commit instead of two: the insert's, then the lease's. The
// engine uses Park instead of Lease for a call that may wait.
type Parker interface {
	// Park leases up to p.Limit jobs of p.Queues like Lease, reading now
	// for the time; when there are none, it parks the call, atomically
	// with respect to every write, so that no job made available after
	// the try can miss it. The result is Done at once when the try
	// leased jobs. p.Now is ignored.
	Park(ctx context.Context, p LeaseParams, now func() time.Time) (ParkedLease, error)
}

// ParkedLease is one parked lease call (see Parker).
type ParkedLease interface {
	// Done is closed once the store has leased jobs for the call, or
	// failed to, or the call was withdrawn: Result then tells which.
	Done() <-chan struct{}
	// Result returns what the store leased for the call. It is valid
	// once Done is closed.
	Result() ([]*job.Job, error)
	// Cancel withdraws the call. When the store had already taken it into
	// a write, Cancel waits for that write and returns its result: those
	// jobs are leased to the caller, who must work them or let their
	// leases expire. After Cancel no jobs are leased for the call.
	Cancel() ([]*job.Job, error)
}

// InsertParams are the inputs of Store.Insert.
type InsertParams struct {
	Now  time.Time
	Jobs []*job.Insert
}

// IdempotentInsertParams are the inputs of Store.InsertIdempotent.
type IdempotentInsertParams struct {
	InsertParams
	Key         string
	RequestHash string
	// Since: records created before it have expired and count as absent.
	Since time.Time
	// Render makes the response to store from the insert's results.
	Render func([]InsertResult) (StoredResponse, error)
}

// StoredResponse is the response kept with an idempotency key.
type StoredResponse struct {
	Status int
	Body   []byte
}

// IdempotentInsertResult is the outcome of Store.InsertIdempotent.
type IdempotentInsertResult struct {
	// Results are the insert's results; nil when Replayed.
	Results  []InsertResult
	Response StoredResponse
	// Replayed is true when the key was already used: nothing was
	// inserted and Response is the first call's.
	Replayed bool
}

// InsertResult is the outcome of inserting one job.
type InsertResult struct {
	Job *job.Job
	// Duplicate is true when the job was not inserted because a live job
	// holds its unique key; Job is then that existing job.
	Duplicate bool
}

// LeaseParams are the inputs of Store.Lease.
type LeaseParams struct {
	Now      time.Time
	Queues   []string
	Limit    int
	LeaseFor time.Duration
	// Worker names the lease holder, for operators.
	Worker string
}

// HeartbeatParams are the inputs of Store.Heartbeat.
type HeartbeatParams struct {
	Now        time.Time
	ID         job.ID
	LeaseToken string
	LeaseFor   time.Duration
}

// CompleteParams are the inputs of Store.Complete.
type CompleteParams struct {
	Now  time.Time
	Jobs []CompleteJob
}

// CompleteJob names one job to complete.
type CompleteJob struct {
	ID         job.ID
	LeaseToken string
	// Output is JSON, or empty.
	Output json.RawMessage
}

// SettleResult is the outcome of settling one job.
type SettleResult struct {
	Job *job.Job
	Err error
}

// FailParams are the inputs of Store.Fail.
type FailParams struct {
	Now        time.Time
	ID         job.ID
	LeaseToken string
	// Message and Detail describe the failure; the store adds the attempt
	// and time to make the history entry.
	Message string
	Detail  string
	// RetryAt, when set, is the next run time. Otherwise Backoff (or
	// job.DefaultBackoff when nil) decides from the job as it was running.
	RetryAt time.Time
	Backoff func(*job.Job) time.Duration
	// Discard sends the job to the dead-letter set whatever attempts remain.
	Discard bool
	// Cancel cancels the job (the worker decided it must not run again).
	Cancel bool
}

// SnoozeParams are the inputs of Store.Snooze.
type SnoozeParams struct {
	Now        time.Time
	ID         job.ID
	LeaseToken string
	Delay      time.Duration
}

// CancelParams are the inputs of Store.Cancel.
type CancelParams struct {
	Now time.Time
	ID  job.ID
}

// RetryParams are the inputs of Store.Retry.
type RetryParams struct {
	Now time.Time
	ID  job.ID
}

// DeleteParams are the inputs of Store.Delete.
type DeleteParams struct {
	ID job.ID
}

// ListParams are the inputs of Store.List. Empty filters match everything;
// several values in one filter match any of them.
type ListParams struct {
	States []job.State
	Kinds  []string
	Queues []string
	// Tag matches jobs that carry this tag.
	Tag string
	// CreatedBy matches jobs enqueued by this principal (Job.CreatedBy).
	CreatedBy string
	// After is the cursor: the id after which the page starts (in the
	// chosen order); zero starts at the beginning.
	After job.ID
	Desc  bool
	// Limit is the page size; stores cap it at MaxListLimit.
	Limit int
}

// MaxListLimit caps ListParams.Limit.
const MaxListLimit = 1000

// ListResult is one page of Store.List.
type ListResult struct {
	Jobs []*job.Job
	// Next is the cursor of the next page, zero on the last page.
	Next job.ID
}

// PromoteParams are the inputs of Store.Promote.
type PromoteParams struct {
	Now   time.Time
	Limit int
}

// RescueParams are the inputs of Store.Rescue.
type RescueParams struct {
	Now   time.Time
	Limit int
}

// PruneParams are the inputs of Store.Prune.
type PruneParams struct {
	Before time.Time
	States []job.State
	Limit  int
}

// QueuePauseParams are the inputs of Store.SetQueuePaused.
type QueuePauseParams struct {
	Now    time.Time
	Queue  string
	Paused bool
}

// QueueInfo describes one queue.
type QueueInfo struct {
	Name   string
	Paused bool
	// Counts holds the number of jobs per state; states without jobs may
	// be absent.
	Counts map[job.State]int
}

// TokenRecord is a stored API token.
type TokenRecord struct {
	ID        int64
	Name      string
	Scope     string
	Hash      string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// CreateTokenParams are the inputs of Store.CreateToken.
type CreateTokenParams struct {
	Now   time.Time
	Name  string
	Scope string
	Hash  string
}

// RevokeTokenParams are the inputs of Store.RevokeToken.
type RevokeTokenParams struct {
	Now time.Time
	ID  int64
}

// TimedOutMessage is the error message recorded when an attempt outruns
// its job's timeout.
func TimedOutMessage(timeout time.Duration) string {
	return "attempt timed out after " + timeout.String()
}

// LeaseExpiredMessage is the error message recorded when a lease expires.
const LeaseExpiredMessage = "lease expired: the worker stopped heartbeating before settling the job"
