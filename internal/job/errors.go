package job

import (
	"errors"
	"fmt"
)

// Sentinel errors that callers branch on with errors.Is. Stores translate
// their backend's errors into these at their boundary, and the faces map
// them to wire codes in one place (see Code).
var (
	// ErrNotFound means no job (or queue) has the given identity.
	ErrNotFound = errors.New("not found")
	// ErrLeaseLost means the presented lease token is not the job's live
	// lease: the lease expired and was rescued, or the job was settled or
	// re-leased. Nothing was changed.
	ErrLeaseLost = errors.New("lease lost")
	// ErrInvalidState means the job is in a state that does not allow the
	// requested transition (for example cancelling a completed job).
	ErrInvalidState = errors.New("invalid state for this operation")
	// ErrConflict means the request conflicts with existing data, such as
	// an idempotency key reused with a different body.
	ErrConflict = errors.New("conflict")
	// ErrIdempotencyMismatch means an idempotency key was used again with
	// a different request.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
	// ErrTooLarge means a value is over its size limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable means the store cannot serve the request now (it is
	// closed, shutting down, or failed a durable write and must be reopened).
	ErrUnavailable = errors.New("unavailable")
	// ErrOverloaded means the request was refused to protect the server;
	// the caller may retry later.
	ErrOverloaded = errors.New("overloaded")
	// ErrStorageFull means the store's disk is full: the write was rolled
	// back and nothing of it stored. Writes succeed again once space is
	// freed; reads still work.
	ErrStorageFull = errors.New("storage full")
	// ErrInvalid is the sentinel that every *ValidationError matches.
	ErrInvalid = errors.New("invalid input")
)

// ValidationError reports one field that breaks a rule. It matches
// ErrInvalid with errors.Is, and ErrTooLarge too when the rule is a size
// limit.
type ValidationError struct {
	// Field is the snake_case name of the offending field, as on the wire
	// (for example "kind" or "jobs[3].priority").
	Field string
	// Message says what rule was broken, in lower case.
	Message string
	// TooLarge marks size-limit violations, which HTTP answers with 413.
	TooLarge bool
}

// Error implements error.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Message)
}

// Is reports whether target is ErrInvalid, or ErrTooLarge for a size limit.
func (e *ValidationError) Is(target error) bool {
	return target == ErrInvalid || (e.TooLarge && target == ErrTooLarge)
}

// invalid builds a *ValidationError.
func invalid(field, format string, a ...any) *ValidationError {
	return &ValidationError{Field: field, Message: fmt.Sprintf(format, a...)}
}

// Code returns the stable, machine-readable code for err, the one that every
// face puts on the wire (REST problem type, gRPC detail, GraphQL
// extensions.code). Codes are API: never rename one.
func Code(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrInvalid):
		return "invalid_argument"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrLeaseLost):
		return "lease_lost"
	case errors.Is(err, ErrInvalidState):
		return "invalid_state"
	case errors.Is(err, ErrIdempotencyMismatch):
		return "idempotency_mismatch"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrOverloaded):
		return "overloaded"
	case errors.Is(err, ErrStorageFull):
		return "storage_full"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	default:
		return "internal"
	}
}
