package remote

import (
	"context"
	"errors"
	"testing"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/droverhq/drover/internal/job"
)

// TestCallError: a call cut by its connection (a reset stream arrives as
// CANCELED) is unavailable and tried again, while the caller's own
// cancellation stays a cancellation, and the server's refusals keep
// their codes.
func TestCallError(t *testing.T) {
	t.Parallel()
	live := t.Context()
	done, cancel := context.WithCancel(t.Context())
	cancel()

	reset := connect.NewError(connect.CodeCanceled, errors.New("stream reset"))
	if err := callError(live, reset); !errors.Is(err, job.ErrUnavailable) || !temporary(err) {
		t.Errorf("a reset under a live context = %v, want ErrUnavailable, temporary", err)
	}
	if err := callError(done, reset); !errors.Is(err, context.Canceled) || temporary(err) {
		t.Errorf("a reset under a cancelled context = %v, want context.Canceled, not temporary", err)
	}
	if err := callError(live, errors.New("dial tcp: connection refused")); !errors.Is(err, job.ErrUnavailable) {
		t.Errorf("a transport failure = %v, want ErrUnavailable", err)
	}

	refused := connect.NewError(connect.CodeFailedPrecondition, errors.New("job 7: lease lost"))
	d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: "lease_lost", Domain: errorDomain})
	if err != nil {
		t.Fatal(err)
	}
	refused.AddDetail(d)
	if err := callError(live, refused); !errors.Is(err, job.ErrLeaseLost) || temporary(err) {
		t.Errorf("a lease_lost refusal = %v, want ErrLeaseLost, not temporary", err)
	}
	bad := connect.NewError(connect.CodeInvalidArgument, errors.New("priority: must be 1 to 9"))
	bd, err := connect.NewErrorDetail(&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: "priority", Description: "must be 1 to 9"}}})
	if err != nil {
		t.Fatal(err)
	}
	bad.AddDetail(bd)
	var ve *job.ValidationError
	if err := callError(live, bad); !errors.As(err, &ve) || ve.Field != "priority" {
		t.Errorf("an invalid argument = %v, want a *ValidationError on priority", err)
	}
}

// TestRetryStopsOnLastTry tries a temporary failure maxTries times and a
// permanent one once.
func TestRetryStopsOnLastTry(t *testing.T) {
	t.Parallel()
	tries := 0
	err := retry(t.Context(), func() error { tries++; return job.ErrUnavailable })
	if !errors.Is(err, job.ErrUnavailable) || tries != maxTries {
		t.Errorf("a temporary failure: %v after %d tries, want %d", err, tries, maxTries)
	}
	tries = 0
	err = retry(t.Context(), func() error { tries++; return job.ErrNotFound })
	if !errors.Is(err, job.ErrNotFound) || tries != 1 {
		t.Errorf("a permanent failure: %v after %d tries, want 1", err, tries)
	}
}
