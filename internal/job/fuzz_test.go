package job_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/job"
)

// fuzzLimit is small so that the fuzzer reaches the size limit.
const fuzzLimit = 512

// onlyJSONSpace reports whether b holds nothing but JSON white space
// (RFC 8259: space, tab, line feed, carriage return).
func onlyJSONSpace(b []byte) bool {
	return len(bytes.Trim(b, " \t\r\n")) == 0
}

// decoderDepth measures nesting with encoding/json's tokenizer, as an
// independent check of the depth limit. It reports ok=false if the decoder
// rejects the input.
func decoderDepth(b []byte) (depth int, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // else numbers beyond float64 are errors
	cur := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return depth, true
		}
		if err != nil {
			return 0, false
		}
		if d, isDelim := tok.(json.Delim); isDelim {
			switch d {
			case '[', '{':
				cur++
				depth = max(depth, cur)
			case ']', '}':
				cur--
			}
		}
	}
}

func FuzzNormalizeJSON(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `null`, `{"a":[1,2,{"b":"c"}]}`, " [ 1 , \"x\" ]\n",
		`"\u00e9\ud800"`, "\"\xff\"", `{"a":"[[[["}`, nest(job.MaxJSONDepth),
		nest(job.MaxJSONDepth + 1), `["\\",[[]]]`, `1 2`, strings.Repeat(" ", fuzzLimit+1),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, err := job.NormalizeJSON(in, fuzzLimit, "args")
		if !bytes.Equal(in, orig) {
			t.Fatalf("NormalizeJSON modified its input")
		}
		if err != nil {
			var ve *job.ValidationError
			if !errors.As(err, &ve) || ve.Field != "args" || !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("error %v (%T) is not a *ValidationError for args", err, err)
			}
			if out != nil {
				t.Fatalf("output %q with error %v", out, err)
			}
			if errors.Is(err, job.ErrTooLarge) != (len(in) > fuzzLimit) {
				t.Fatalf("TooLarge = %v for %d bytes, limit %d", errors.Is(err, job.ErrTooLarge), len(in), fuzzLimit)
			}
			// Anything that is one valid JSON value within every limit must
			// be accepted.
			if d, ok := decoderDepth(in); ok && json.Valid(in) && utf8.Valid(in) &&
				len(in) <= fuzzLimit && d <= job.MaxJSONDepth {
				t.Fatalf("rejected valid JSON %q (depth %d): %v", in, d, err)
			}
			return
		}

		// Success: the input was acceptable...
		if len(in) > fuzzLimit {
			t.Fatalf("accepted %d bytes, limit %d", len(in), fuzzLimit)
		}
		if !utf8.Valid(in) {
			t.Fatalf("accepted invalid UTF-8 %q", in)
		}
		if onlyJSONSpace(in) {
			if string(out) != "null" {
				t.Fatalf("blank input gave %q, want null", out)
			}
		} else if !json.Valid(in) {
			t.Fatalf("accepted invalid JSON %q as %q", in, out)
		}
		// ...and the output is valid, compact, within every limit...
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("output %q is not valid UTF-8 JSON", out)
		}
		if len(out) > len(in) && !onlyJSONSpace(in) {
			t.Fatalf("output %q longer than input %q", out, in)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, out); err != nil || !bytes.Equal(compact.Bytes(), out) {
			t.Fatalf("output %q is not compact (%q)", out, compact.Bytes())
		}
		if d, ok := decoderDepth(out); !ok || d > job.MaxJSONDepth {
			t.Fatalf("output %q is nested %d deep (decoder ok %v)", out, d, ok)
		}
		// ...equal as a value to the input...
		if !onlyJSONSpace(in) {
			var want bytes.Buffer
			if err := json.Compact(&want, in); err != nil || !bytes.Equal(want.Bytes(), out) {
				t.Fatalf("output %q differs from json.Compact %q", out, want.Bytes())
			}
		}
		// ...and a fixed point.
		again, err := job.NormalizeJSON(out, fuzzLimit, "args")
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("re-normalizing %q gave %q, %v", out, again, err)
		}

		// Canonical JSON of accepted input always works and is stable.
		canon, err := job.CanonicalJSON(out)
		if err != nil {
			t.Fatalf("CanonicalJSON(%q): %v", out, err)
		}
		if !json.Valid(canon) {
			t.Fatalf("CanonicalJSON(%q) = %q, not valid JSON", out, canon)
		}
		canon2, err := job.CanonicalJSON(canon)
		if err != nil || !bytes.Equal(canon, canon2) {
			t.Fatalf("CanonicalJSON not idempotent: %q then %q (%v)", canon, canon2, err)
		}
	})
}

func FuzzPrepare(f *testing.F) {
	f.Add("email.send", "", []byte(`{"to":"a@b"}`), 0, 0, false)
	f.Add("k", "high", []byte(" [1, 2 ,3] "), 1, 3, true)
	f.Add("", "q", []byte(`null`), 9, 1, false)
	f.Add("a b", "q/x", []byte("\"\xff\""), 10, -1, true)
	f.Add(strings.Repeat("k", 129), "é", []byte(nest(job.MaxJSONDepth+1)), -1, 25, false)
	f.Add("k:v", "q.1", []byte(`{"b":{"y":1,"x":2},"a":[]}`), 5, 1000, true)
	f.Fuzz(func(t *testing.T, kind, queue string, args []byte, priority, maxAttempts int, byArgs bool) {
		lim := job.Limits{MaxArgsBytes: fuzzLimit}
		s := job.Spec{
			Kind: kind, Queue: queue, Args: bytes.Clone(args),
			Priority: priority, MaxAttempts: maxAttempts,
		}
		if byArgs {
			s.Unique = &job.UniqueOpts{ByArgs: true}
		}
		in, err := s.Prepare(testNow, lim, "jobs[0].")
		if err != nil {
			var ve *job.ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
			}
			if !strings.HasPrefix(ve.Field, "jobs[0].") {
				t.Fatalf("Field %q lacks the prefix", ve.Field)
			}
			if in != nil {
				t.Fatalf("Insert %+v with error %v", in, err)
			}
			return
		}

		if err := job.ValidateName(in.Kind); err != nil || in.Kind != kind {
			t.Fatalf("accepted kind %q as %q: %v", kind, in.Kind, err)
		}
		if err := job.ValidateName(in.Queue); err != nil {
			t.Fatalf("accepted queue %q as %q: %v", queue, in.Queue, err)
		}
		if in.Priority < job.MinPriority || in.Priority > job.MaxPriority {
			t.Fatalf("priority %d", in.Priority)
		}
		if in.MaxAttempts < 1 {
			t.Fatalf("max_attempts %d", in.MaxAttempts)
		}
		if !json.Valid(in.Args) || !utf8.Valid(in.Args) || len(in.Args) > fuzzLimit {
			t.Fatalf("args %q: valid JSON %v, valid UTF-8 %v, %d bytes (limit %d)",
				in.Args, json.Valid(in.Args), utf8.Valid(in.Args), len(in.Args), fuzzLimit)
		}
		if len(args) > fuzzLimit {
			t.Fatalf("accepted %d bytes of args, limit %d", len(args), fuzzLimit)
		}
		if byArgs != (in.UniqueKey != "") {
			t.Fatalf("unique %v but key %q", byArgs, in.UniqueKey)
		}

		// Preparing the output again changes nothing.
		s2 := job.Spec{
			Kind: in.Kind, Queue: in.Queue, Args: in.Args,
			Priority: in.Priority, MaxAttempts: in.MaxAttempts,
			RunAt: in.ScheduledAt, Timeout: in.Timeout,
			Unique: s.Unique, Tags: in.Tags, Metadata: in.Metadata, DependsOn: in.DependsOn,
		}
		in2, err := s2.Prepare(testNow, lim, "jobs[0].")
		if err != nil {
			t.Fatalf("Prepare of the output %+v: %v", in, err)
		}
		if !reflect.DeepEqual(in, in2) {
			t.Fatalf("Prepare is not idempotent:\nfirst  %+v\nsecond %+v", in, in2)
		}
	})
}
