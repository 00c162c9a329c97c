package drover

import (
	"errors"
	"fmt"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/remote"
)

// Errors that callers branch on with errors.Is.
var (
	// ErrNotFound: no such job.
	ErrNotFound = job.ErrNotFound
	// ErrLeaseLost: the lease token is stale (the lease expired and the job
	// was re-delivered, or it was cancelled or settled); nothing changed.
	ErrLeaseLost = job.ErrLeaseLost
	// ErrInvalidState: the job's state does not allow the operation.
	ErrInvalidState = job.ErrInvalidState
	// ErrInvalid: the input breaks a rule; the error is a
	// *ValidationError naming the field.
	ErrInvalid = job.ErrInvalid
	// ErrTooLarge: a value is over its size limit.
	ErrTooLarge = job.ErrTooLarge
	// ErrUnavailable: the store cannot serve requests (closed, or it must
	// be reopened after a failed durable write), or a remote server does
	// not answer.
	ErrUnavailable = job.ErrUnavailable
	// ErrUnauthorized: a remote server wants a valid bearer token (see
	// RemoteOptions.Token).
	ErrUnauthorized = remote.ErrUnauthorized
	// ErrForbidden: the remote server refused the call for the token's
	// scope.
	ErrForbidden = remote.ErrForbidden
)

// ValidationError names the field of a bad input and the rule it breaks.
type ValidationError = job.ValidationError

// snoozeError, cancelError, discardError and retryError carry a worker's
// decision back to the client; see Snooze, Cancel, Discard and RetryIn.
type snoozeError struct{ delay time.Duration }

func (e *snoozeError) Error() string { return fmt.Sprintf("snooze for %s", e.delay) }

type cancelError struct{ err error }

func (e *cancelError) Error() string { return "cancel: " + errString(e.err) }
func (e *cancelError) Unwrap() error { return e.err }

type discardError struct{ err error }

func (e *discardError) Error() string { return "discard: " + errString(e.err) }
func (e *discardError) Unwrap() error { return e.err }

type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string { return errString(e.err) }
func (e *retryError) Unwrap() error { return e.err }

func errString(err error) string {
	if err == nil {
		return "no reason given"
	}
	return err.Error()
}

// Snooze returns an error that, returned by a worker, re-schedules the job
// to run again after delay without using up an attempt: for work that is
// not ready yet.
func Snooze(delay time.Duration) error { return &snoozeError{delay: max(delay, 0)} }

// Cancel returns an error that, returned by a worker, cancels the job: it
// will not run again. err is recorded in the job's error history.
func Cancel(err error) error { return &cancelError{err: err} }

// Discard returns an error that, returned by a worker, sends the job to the
// dead-letter set (state discarded) whatever attempts remain: for failures
// that retrying cannot fix, such as bad args. err is recorded in the job's
// history.
func Discard(err error) error { return &discardError{err: err} }

// RetryIn returns an error that, returned by a worker, fails the attempt
// like err and sets the next attempt delay from now, instead of the
// backoff.
func RetryIn(err error, delay time.Duration) error {
	return &retryError{err: err, delay: max(delay, 0)}
}

// PanicError is the error recorded when a worker panics: the attempt fails
// with the panic value as its message and the stack as its detail.
type PanicError struct {
	Value any
	Stack string
}

// Error implements error.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// asControl classifies a worker's error.
func asControl(err error) (snooze *snoozeError, cancel *cancelError, discard *discardError, retry *retryError) {
	errors.As(err, &snooze)
	errors.As(err, &cancel)
	errors.As(err, &discard)
	errors.As(err, &retry)
	return
}
