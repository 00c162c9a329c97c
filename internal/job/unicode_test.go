package job_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/job"
)

// TestNormalizeJSONLoneSurrogates checks that JSON whose strings escape a
// lone UTF-16 surrogate is refused, naming the escape: decoded, it is no
// Unicode character, and encoding/json would silently make it U+FFFD.
// Escaped pairs, and text that only looks like an escape, are accepted.
func TestNormalizeJSONLoneSurrogates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"lone high surrogate", `"\ud800"`, false},
		{"lone low surrogate", `"\udc00"`, false},
		{"pair in the wrong order", `"\udc00\ud800"`, false},
		{"high surrogate before a plain escape", `"\ud83d\u0041"`, false},
		{"high surrogate before text", `"\ud83dx"`, false},
		{"high surrogate at the end", `["a\ud83d"]`, false},
		{"lone surrogate in a key", `{"\udfff":1}`, false},
		{"lone surrogate after a pair", `"\ud83d\ude00\ud83d"`, false},
		{"pair", `"\ud83d\ude00"`, true},
		{"pair in upper case", `"\uD83D\uDE00"`, true},
		{"escaped backslash before u", `"\\ud800"`, true},
		{"escaped quote before the escape", `"\"\u00e9"`, true},
		{"replacement character itself", `"\ufffd"`, true},
		{"NUL escape", `"\u0000"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := job.NormalizeJSON(json.RawMessage(tc.in), 1024, "args")
			if tc.ok {
				if err != nil || string(out) != tc.in {
					t.Fatalf("NormalizeJSON(%s) = %s, %v; want it unchanged", tc.in, out, err)
				}
				return
			}
			var ve *job.ValidationError
			if !errors.As(err, &ve) || ve.Field != "args" || !strings.Contains(ve.Message, "lone UTF-16 surrogate") {
				t.Fatalf("NormalizeJSON(%s) = %s, %v; want a validation error about a lone surrogate", tc.in, out, err)
			}
			if errors.Is(err, job.ErrTooLarge) {
				t.Fatalf("lone surrogate reported as too large: %v", err)
			}
		})
	}
}

// TestPrepareRejectsLoneSurrogateMetadata checks the rule for metadata,
// which shares the check with args.
func TestPrepareRejectsLoneSurrogateMetadata(t *testing.T) {
	t.Parallel()
	s := job.Spec{Kind: "k", Metadata: json.RawMessage(`{"a":"\ud800"}`)}
	_, err := s.Prepare(testNow, job.Limits{}, "")
	var ve *job.ValidationError
	if !errors.As(err, &ve) || ve.Field != "metadata" {
		t.Fatalf("Prepare = %v, want a validation error for metadata", err)
	}
}

// TestCheckJSONText checks the guard that faces run before decoding a
// request body.
func TestCheckJSONText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     string // a substring of the error; empty means accepted
	}{
		{"valid", `{"error":"boom ü 😀"}`, ""},
		{"invalid UTF-8 in a string", "{\"error\":\"a\xffb\"}", "UTF-8"},
		{"overlong encoding of /", "{\"error\":\"\xc0\xaf\"}", "UTF-8"},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", "UTF-8"},
		{"invalid UTF-8 in invalid JSON", "{\xff", "UTF-8"},
		{"lone surrogate escape", `{"error":"\ud800"}`, "surrogate"},
		{"invalid JSON is left to the decoder", `{"error":"\ud800"`, ""},
		{"escaped pair", `{"error":"\ud83d\ude00"}`, ""},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := job.CheckJSONText([]byte(tc.in))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("CheckJSONText(%q) = %v, want nil", tc.in, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("CheckJSONText(%q) = %v, want an error about %s", tc.in, err, tc.want)
			}
		})
	}
}
