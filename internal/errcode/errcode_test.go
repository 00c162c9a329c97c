package errcode_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/job"
)

// TestTable pins the table: the status and gRPC code of every stable
// code, as DESIGN.md and the API docs promise them. A change here is an
// API change.
func TestTable(t *testing.T) {
	t.Parallel()
	want := map[string]struct {
		status int
		grpc   connect.Code
		retry  bool
	}{
		"invalid_argument":     {http.StatusUnprocessableEntity, connect.CodeInvalidArgument, false},
		"idempotency_mismatch": {http.StatusUnprocessableEntity, connect.CodeInvalidArgument, false},
		"too_large":            {http.StatusRequestEntityTooLarge, connect.CodeInvalidArgument, false},
		"not_found":            {http.StatusNotFound, connect.CodeNotFound, false},
		"lease_lost":           {http.StatusConflict, connect.CodeFailedPrecondition, false},
		"invalid_state":        {http.StatusConflict, connect.CodeFailedPrecondition, false},
		"conflict":             {http.StatusConflict, connect.CodeAborted, false},
		"overloaded":           {http.StatusTooManyRequests, connect.CodeResourceExhausted, true},
		"unavailable":          {http.StatusServiceUnavailable, connect.CodeUnavailable, true},
		"storage_full":         {http.StatusInsufficientStorage, connect.CodeResourceExhausted, false},
		"unauthorized":         {http.StatusUnauthorized, connect.CodeUnauthenticated, false},
		"forbidden":            {http.StatusForbidden, connect.CodePermissionDenied, false},
		"internal":             {http.StatusInternalServerError, connect.CodeInternal, false},
	}
	entries := errcode.Entries()
	if len(entries) != len(want) {
		t.Errorf("the table has %d rows, want %d", len(entries), len(want))
	}
	for _, e := range entries {
		w, ok := want[e.Code]
		if !ok {
			t.Errorf("row %q is not pinned by this test", e.Code)
			continue
		}
		if e.HTTPStatus != w.status || e.GRPC != w.grpc || (e.RetryAfter > 0) != w.retry {
			t.Errorf("%s = %d %s retry %s; want %d %s retry %t", e.Code, e.HTTPStatus, e.GRPC, e.RetryAfter, w.status, w.grpc, w.retry)
		}
	}
	if got := errcode.Lookup("no_such_code"); got.Code != errcode.Internal {
		t.Errorf("Lookup of an unknown code = %q, want internal", got.Code)
	}
}

// TestEveryErrorHasARow maps each sentinel, wrapped as callers wrap them,
// to its row: nothing the engine or the token check returns falls to
// internal by accident.
func TestEveryErrorHasARow(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		code string
	}{
		{&job.ValidationError{Field: "kind", Message: "bad"}, "invalid_argument"},
		{&job.ValidationError{Field: "args", Message: "big", TooLarge: true}, "too_large"},
		{job.ErrNotFound, "not_found"},
		{job.ErrLeaseLost, "lease_lost"},
		{job.ErrInvalidState, "invalid_state"},
		{job.ErrConflict, "conflict"},
		{job.ErrIdempotencyMismatch, "idempotency_mismatch"},
		{job.ErrOverloaded, "overloaded"},
		{job.ErrUnavailable, "unavailable"},
		{job.ErrStorageFull, "storage_full"},
		{&auth.Error{Message: "no token"}, "unauthorized"},
		{&auth.Error{Forbidden: true, Message: "wrong scope"}, "forbidden"},
		{errors.New("disk on fire"), "internal"},
	} {
		wrapped := fmt.Errorf("job 7: %w", tc.err)
		if got := errcode.Of(wrapped); got.Code != tc.code {
			t.Errorf("Of(%v) = %q, want %q", wrapped, got.Code, tc.code)
		}
		if tc.code != errcode.Internal && errcode.Lookup(tc.code).Code != tc.code {
			t.Errorf("%q has no row", tc.code)
		}
	}
}
