// Package errcode is the one table that maps Drover's errors to the wire.
// Every error a face answers with has a stable code (job.Code, plus the
// codes of authentication), and each code has one row here: the HTTP
// status that REST answers with, the gRPC code that the Connect face
// answers with, and whether the refusal is temporary (REST then sends
// Retry-After, gRPC a google.rpc.RetryInfo detail). GraphQL will put the
// same code in extensions.code. No face decides a status on its own.
package errcode

import (
	"errors"
	"net/http"
	"time"

	"connectrpc.com/connect"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/job"
)

// The stable codes of refusals that do not come from the engine.
const (
	// Unauthorized: no valid bearer token.
	Unauthorized = "unauthorized"
	// Forbidden: the token's scope does not allow the call.
	Forbidden = "forbidden"
	// Internal: anything else; the client sees only "internal error".
	Internal = "internal"
)

// Entry is one row of the table.
type Entry struct {
	// Code is the stable, machine-readable code. Codes are API: never
	// rename one.
	Code string
	// HTTPStatus is REST's status.
	HTTPStatus int
	// GRPC is the gRPC (and Connect) code.
	GRPC connect.Code
	// RetryAfter, when positive, marks a temporary refusal: the client
	// may try again after this long (REST Retry-After, gRPC RetryInfo).
	RetryAfter time.Duration
}

// table lists every code. A code's gRPC code follows the gRPC status
// guide: FAILED_PRECONDITION where the client must change the system's
// state before retrying (a stale lease, a job in the wrong state),
// RESOURCE_EXHAUSTED for refusals to protect the server, UNAVAILABLE for
// a server that cannot serve now. Size limits on a job's fields are
// INVALID_ARGUMENT, not RESOURCE_EXHAUSTED, because retrying the same
// request never helps and gRPC clients often retry RESOURCE_EXHAUSTED.
var table = []Entry{
	{Code: "invalid_argument", HTTPStatus: http.StatusUnprocessableEntity, GRPC: connect.CodeInvalidArgument},
	{Code: "idempotency_mismatch", HTTPStatus: http.StatusUnprocessableEntity, GRPC: connect.CodeInvalidArgument},
	{Code: "too_large", HTTPStatus: http.StatusRequestEntityTooLarge, GRPC: connect.CodeInvalidArgument},
	{Code: "not_found", HTTPStatus: http.StatusNotFound, GRPC: connect.CodeNotFound},
	{Code: "lease_lost", HTTPStatus: http.StatusConflict, GRPC: connect.CodeFailedPrecondition},
	{Code: "invalid_state", HTTPStatus: http.StatusConflict, GRPC: connect.CodeFailedPrecondition},
	{Code: "conflict", HTTPStatus: http.StatusConflict, GRPC: connect.CodeAborted},
	{Code: "overloaded", HTTPStatus: http.StatusTooManyRequests, GRPC: connect.CodeResourceExhausted, RetryAfter: time.Second},
	{Code: "unavailable", HTTPStatus: http.StatusServiceUnavailable, GRPC: connect.CodeUnavailable, RetryAfter: time.Second},
	// The store cannot take the write; retrying helps only once an
	// operator frees space, so no retry time is given.
	{Code: "storage_full", HTTPStatus: http.StatusInsufficientStorage, GRPC: connect.CodeResourceExhausted},
	{Code: Unauthorized, HTTPStatus: http.StatusUnauthorized, GRPC: connect.CodeUnauthenticated},
	{Code: Forbidden, HTTPStatus: http.StatusForbidden, GRPC: connect.CodePermissionDenied},
	{Code: Internal, HTTPStatus: http.StatusInternalServerError, GRPC: connect.CodeInternal},
}

var byCode = func() map[string]Entry {
	m := make(map[string]Entry, len(table))
	for _, e := range table {
		m[e.Code] = e
	}
	return m
}()

// Lookup returns the row of a stable code; an unknown code gets the row
// of Internal.
func Lookup(code string) Entry {
	if e, ok := byCode[code]; ok {
		return e
	}
	return byCode[Internal]
}

// Entries returns every row, for tests and documentation.
func Entries() []Entry { return append([]Entry(nil), table...) }

// Code returns the stable code of err: the authentication refusals of
// package auth, else job.Code.
func Code(err error) string {
	switch {
	case errors.Is(err, auth.ErrForbidden):
		return Forbidden
	case errors.Is(err, auth.ErrUnauthenticated):
		return Unauthorized
	}
	return job.Code(err)
}

// Of returns the row of err.
func Of(err error) Entry { return Lookup(Code(err)) }
