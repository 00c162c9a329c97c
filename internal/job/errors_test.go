package job_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/droverhq/drover/internal/job"
)

func TestCode(t *testing.T) {
	t.Parallel()
	// The codes are API: this table is the contract, never edit a code.
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"not found", job.ErrNotFound, "not_found"},
		{"lease lost", job.ErrLeaseLost, "lease_lost"},
		{"invalid state", job.ErrInvalidState, "invalid_state"},
		{"conflict", job.ErrConflict, "conflict"},
		{"too large", job.ErrTooLarge, "too_large"},
		{"unavailable", job.ErrUnavailable, "unavailable"},
		{"overloaded", job.ErrOverloaded, "overloaded"},
		{"storage full", job.ErrStorageFull, "storage_full"},
		{"invalid", job.ErrInvalid, "invalid_argument"},
		{"validation error", &job.ValidationError{Field: "kind", Message: "bad"}, "invalid_argument"},
		{"too large validation error", &job.ValidationError{Field: "args", Message: "big", TooLarge: true}, "too_large"},
		{"unknown", errors.New("disk on fire"), "internal"},
		{"sentinel text without identity", errors.New("not found"), "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := job.Code(tt.err); got != tt.want {
				t.Errorf("Code(%v) = %q, want %q", tt.err, got, tt.want)
			}
			if tt.err == nil {
				return
			}
			wrapped := fmt.Errorf("lease from %q: %w", "q", tt.err)
			if got := job.Code(wrapped); got != tt.want {
				t.Errorf("Code(wrapped %v) = %q, want %q", tt.err, got, tt.want)
			}
			twice := fmt.Errorf("outer: %w", wrapped)
			if got := job.Code(twice); got != tt.want {
				t.Errorf("Code(wrapped twice %v) = %q, want %q", tt.err, got, tt.want)
			}
			joined := errors.Join(errors.New("context"), tt.err)
			if got := job.Code(joined); got != tt.want {
				t.Errorf("Code(joined %v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestValidationErrorIs(t *testing.T) {
	t.Parallel()
	sentinels := []error{
		job.ErrNotFound, job.ErrLeaseLost, job.ErrInvalidState, job.ErrConflict,
		job.ErrTooLarge, job.ErrUnavailable, job.ErrOverloaded, job.ErrInvalid,
		job.ErrStorageFull,
	}
	for _, tooLarge := range []bool{false, true} {
		t.Run(fmt.Sprintf("TooLarge=%v", tooLarge), func(t *testing.T) {
			t.Parallel()
			var err error = &job.ValidationError{Field: "f", Message: "m", TooLarge: tooLarge}
			for _, target := range sentinels {
				want := target == job.ErrInvalid || (tooLarge && target == job.ErrTooLarge) //nolint:errorlint // comparing the sentinels themselves, not a returned error
				if got := errors.Is(err, target); got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", target, got, want)
				}
				if got := errors.Is(fmt.Errorf("wrap: %w", err), target); got != want {
					t.Errorf("errors.Is(wrapped, %v) = %v, want %v", target, got, want)
				}
			}
			var ve *job.ValidationError
			if !errors.As(fmt.Errorf("wrap: %w", err), &ve) || ve.Field != "f" {
				t.Errorf("errors.As did not find the *ValidationError")
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	t.Parallel()
	err := &job.ValidationError{Field: "jobs[3].priority", Message: "must be from 1 to 9, got 10"}
	want := "invalid jobs[3].priority: must be from 1 to 9, got 10"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

// TestSentinelsAreDistinct makes sure no sentinel matches another, which
// would make Code's answer depend on the order of its cases.
func TestSentinelsAreDistinct(t *testing.T) {
	t.Parallel()
	sentinels := []error{
		job.ErrNotFound, job.ErrLeaseLost, job.ErrInvalidState, job.ErrConflict,
		job.ErrTooLarge, job.ErrUnavailable, job.ErrOverloaded, job.ErrInvalid,
		job.ErrStorageFull,
	}
	codes := map[string]error{}
	for i, a := range sentinels {
		for j, b := range sentinels {
			if i != j && errors.Is(a, b) {
				t.Errorf("errors.Is(%v, %v) = true", a, b)
			}
		}
		c := job.Code(a)
		if prev, ok := codes[c]; ok {
			t.Errorf("%v and %v share the code %q", prev, a, c)
		}
		codes[c] = a
	}
}
