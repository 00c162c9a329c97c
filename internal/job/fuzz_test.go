package job_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/droverhq/drover/internal/job"
)

// The fuzz targets here check the job vocabulary's validators by their
// properties, each against an independent oracle where one exists
// (encoding/json, regexp, unicode/utf16). Their seed corpora live in
// testdata/fuzz and run in every go test; make fuzz explores further.

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

// hasLoneSurrogate reports whether valid JSON b has a string whose \u
// escapes spell a lone UTF-16 surrogate. It finds each string literal from
// encoding/json's token offsets and decodes its escapes with unicode/utf16,
// independently of the scanner in package job.
func hasLoneSurrogate(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	prev := int64(0)
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		end := dec.InputOffset()
		lit := b[prev:end]
		prev = end
		if _, isString := tok.(string); !isString {
			continue
		}
		lit = lit[bytes.IndexByte(lit, '"'):]
		var units []uint16
		for i := 1; i < len(lit)-1; i++ {
			if lit[i] != '\\' {
				units = append(units, 0) // any character that is no surrogate
				continue
			}
			i++
			if lit[i] != 'u' {
				units = append(units, 0)
				continue
			}
			var r uint16
			for _, c := range lit[i+1 : i+5] {
				r <<= 4
				switch {
				case c <= '9':
					r |= uint16(c - '0')
				case c <= 'F':
					r |= uint16(c - 'A' + 10)
				default:
					r |= uint16(c - 'a' + 10)
				}
			}
			units = append(units, r)
			i += 4
		}
		for i := 0; i < len(units); i++ {
			if !utf16.IsSurrogate(rune(units[i])) {
				continue
			}
			if i+1 < len(units) && utf16.DecodeRune(rune(units[i]), rune(units[i+1])) != utf8.RuneError {
				i++
				continue
			}
			return true
		}
	}
}

func FuzzNormalizeJSON(f *testing.F) {
	for _, seed := range []string{
		``, ` `, `null`, `{"a":[1,2,{"b":"c"}]}`, " [ 1 , \"x\" ]\n",
		`"\u00e9\ud800"`, "\"\xff\"", `{"a":"[[[["}`, nest(job.MaxJSONDepth),
		nest(job.MaxJSONDepth + 1), `["\\",[[]]]`, `1 2`, strings.Repeat(" ", fuzzLimit+1),
		`"\ud83d\ude00"`, `"\udc00\ud800"`, `"\\ud800"`, `{"\ud800":1}`, `"\uD83D\uDE00"`,
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
			if len(in) <= fuzzLimit && !utf8.Valid(in) && !strings.Contains(ve.Message, "UTF-8") {
				t.Fatalf("invalid UTF-8 %q refused with %q, which does not say so", in, ve.Message)
			}
			// Anything that is one valid JSON value within every limit, in
			// valid Unicode, must be accepted.
			if d, ok := decoderDepth(in); ok && json.Valid(in) && utf8.Valid(in) &&
				len(in) <= fuzzLimit && d <= job.MaxJSONDepth && !hasLoneSurrogate(in) {
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
		if hasLoneSurrogate(in) {
			t.Fatalf("accepted %q, which escapes a lone surrogate (decoded, it would become U+FFFD)", in)
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

		// Canonical JSON of accepted input always works and is stable,
		// and, as decoded values, equal to the input.
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
		if a, b := decodeAny(t, out), decodeAny(t, canon); !reflect.DeepEqual(a, b) {
			t.Fatalf("CanonicalJSON(%q) = %q: decodes to %#v, want %#v", out, canon, b, a)
		}
	})
}

// decodeAny decodes one JSON value, keeping numbers as text.
func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	return v
}

// FuzzCheckJSONText checks the faces' guard against text that
// encoding/json would alter: it refuses exactly invalid UTF-8 and, in
// valid JSON, lone surrogate escapes; and what it accepts decodes without
// a U+FFFD that the text did not spell.
func FuzzCheckJSONText(f *testing.F) {
	for _, seed := range []string{
		`{"error":"boom"}`, "{\"error\":\"\xff\"}", `{"error":"\ud800"}`, `{"error":"\ud83d\ude00"}`,
		`{"error":"\ufffd"}`, "{\"error\":\"\xef\xbf\xbd\"}", `{"error":"\\ud800"}`, `{"a":"\ud800`, "\xc0\xaf",
		`["\u0000"]`, "",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		err := job.CheckJSONText(in)
		switch {
		case !utf8.Valid(in):
			if err == nil || !strings.Contains(err.Error(), "UTF-8") {
				t.Fatalf("CheckJSONText(%q) = %v, want an error about UTF-8", in, err)
			}
			return
		case !json.Valid(in):
			if err != nil {
				t.Fatalf("CheckJSONText(%q) = %v on invalid JSON in valid UTF-8: the decoder should report it", in, err)
			}
			return
		case hasLoneSurrogate(in):
			if err == nil || !strings.Contains(err.Error(), "surrogate") {
				t.Fatalf("CheckJSONText(%q) = %v, want an error about a lone surrogate", in, err)
			}
			return
		case err != nil:
			t.Fatalf("CheckJSONText(%q) refused valid text: %v", in, err)
		}
		// Accepted: decoding never makes a U+FFFD up. Count the replacement
		// characters that the text spells, raw or escaped, against those
		// in the decoded strings.
		spelled := bytes.Count(in, []byte("\uFFFD")) + countFold(in, `\ufffd`) - countFold(in, `\\ufffd`)
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			t.Fatalf("Unmarshal(%q) after CheckJSONText accepted it: %v", in, err)
		}
		if got := countReplacement(v); got > spelled {
			t.Fatalf("%q decodes with %d U+FFFD, but spells only %d", in, got, spelled)
		}
	})
}

func countFold(b []byte, sub string) int {
	return strings.Count(strings.ToLower(string(b)), sub)
}

// countReplacement counts U+FFFD in every string and key of v.
func countReplacement(v any) int {
	switch v := v.(type) {
	case string:
		return strings.Count(v, "\uFFFD")
	case []any:
		n := 0
		for _, e := range v {
			n += countReplacement(e)
		}
		return n
	case map[string]any:
		n := 0
		for k, e := range v {
			n += strings.Count(k, "\uFFFD") + countReplacement(e)
		}
		return n
	}
	return 0
}

// nameRE is the documented rule for kinds, queues and tags, as the
// oracle for ValidateName.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,128}$`)

func FuzzValidateName(f *testing.F) {
	for _, seed := range []string{"", "a", "email.send", "a b", "é", "k\x00", strings.Repeat("k", 128), strings.Repeat("k", 129), "\xff", "q/x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		err := job.ValidateName(s)
		if want := nameRE.MatchString(s); (err == nil) != want {
			t.Fatalf("ValidateName(%q) = %v, want accepted = %v", s, err, want)
		}
	})
}

func FuzzTruncateUTF8(f *testing.F) {
	f.Add("héllo", 2)
	f.Add("x😀", 4)
	f.Add("ab\x80\x80\x80", 3)
	f.Add("", 0)
	f.Add("abc", -1)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 {
			n = -n
		}
		got := job.TruncateUTF8(s, n)
		if len(got) > n || !strings.HasPrefix(s, got) {
			t.Fatalf("TruncateUTF8(%q, %d) = %q: not a prefix of at most %d bytes", s, n, got, n)
		}
		if len(s) <= n && got != s {
			t.Fatalf("TruncateUTF8(%q, %d) = %q: cut a string that fits", s, n, got)
		}
		if utf8.ValidString(s) {
			if !utf8.ValidString(got) {
				t.Fatalf("TruncateUTF8(%q, %d) = %q: split a rune", s, n, got)
			}
			// The longest such prefix: the next rune would not fit.
			if len(got) < len(s) {
				_, size := utf8.DecodeRuneInString(s[len(got):])
				if len(got)+size <= n {
					t.Fatalf("TruncateUTF8(%q, %d) = %q: the next rune fits too", s, n, got)
				}
			}
		}
	})
}

// FuzzPrepare checks Spec.Prepare, the one validator every face's enqueue
// goes through: a rejection is a *ValidationError naming a field of the
// spec (ErrTooLarge only for a size limit), and whatever is accepted obeys
// every rule and prepares again to the same Insert.
func FuzzPrepare(f *testing.F) {
	f.Add("email.send", "", []byte(`{"to":"a@b"}`), 0, 0, false, "", int64(0), int64(0), int64(0), int64(0), "", []byte(nil))
	f.Add("k", "high", []byte(" [1, 2 ,3] "), 1, 3, true, "", int64(0), int64(time.Second), int64(0), int64(time.Minute), "a,b", []byte(`{"x":1}`))
	f.Add("", "q", []byte(`null`), 9, 1, false, "key", int64(time.Hour), int64(0), int64(0), int64(0), "", []byte(nil))
	f.Add("a b", "q/x", []byte("\"\xff\""), 10, -1, true, "k", int64(-1), int64(-1), int64(1), int64(-1), "é", []byte("{\"\xff\":1}"))
	f.Add(strings.Repeat("k", 129), "é", []byte(nest(job.MaxJSONDepth+1)), -1, 25, false, "", int64(0), int64(0), int64(0), int64(0), "", []byte(`[1]`))
	f.Add("k:v", "q.1", []byte(`{"b":{"y":1,"x":2},"a":[]}`), 5, 1000, true, "", int64(24*time.Hour), int64(0), int64(1_000_000_000_000_000_000), int64(0), "t", []byte(`{}`))
	f.Add("k", "q", []byte(`"\ud800"`), 0, 0, false, "", int64(0), int64(0), int64(0), int64(0), "", []byte(`{"a":"\udfff"}`))
	f.Fuzz(func(t *testing.T, kind, queue string, args []byte, priority, maxAttempts int, byArgs bool,
		key string, period, delay, runAt, timeout int64, tags string, metadata []byte,
	) {
		lim := job.Limits{MaxArgsBytes: fuzzLimit}
		s := job.Spec{
			Kind: kind, Queue: queue, Args: bytes.Clone(args),
			Priority: priority, MaxAttempts: maxAttempts,
			Delay: time.Duration(delay), Timeout: time.Duration(timeout),
			Metadata: bytes.Clone(metadata),
		}
		if runAt != 0 {
			s.RunAt = time.Unix(0, runAt)
		}
		if tags != "" {
			s.Tags = strings.Split(tags, ",")
		}
		if byArgs || key != "" || period != 0 {
			s.Unique = &job.UniqueOpts{Key: key, ByArgs: byArgs, Period: time.Duration(period)}
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
			if errors.Is(err, job.ErrTooLarge) &&
				len(args) <= fuzzLimit && len(metadata) <= job.MaxMetadataBytes && len(key) <= 1024 {
				t.Fatalf("too_large (%v) with every value within its limit", err)
			}
			return
		}

		if err := job.ValidateName(in.Kind); err != nil || in.Kind != kind {
			t.Fatalf("accepted kind %q as %q: %v", kind, in.Kind, err)
		}
		if err := job.ValidateName(in.Queue); err != nil || (queue != "" && in.Queue != queue) {
			t.Fatalf("accepted queue %q as %q: %v", queue, in.Queue, err)
		}
		for _, tag := range in.Tags {
			if err := job.ValidateName(tag); err != nil {
				t.Fatalf("accepted tag %q: %v", tag, err)
			}
		}
		if in.Priority < job.MinPriority || in.Priority > job.MaxPriority {
			t.Fatalf("priority %d", in.Priority)
		}
		if in.MaxAttempts < 1 {
			t.Fatalf("max_attempts %d", in.MaxAttempts)
		}
		if in.Timeout < 0 || delay < 0 || (runAt != 0 && delay != 0) {
			t.Fatalf("accepted timeout %d, delay %d with run_at %d", timeout, delay, runAt)
		}
		if !json.Valid(in.Args) || !utf8.Valid(in.Args) || len(in.Args) > fuzzLimit || hasLoneSurrogate(in.Args) {
			t.Fatalf("args %q: valid JSON %v, valid UTF-8 %v, %d bytes (limit %d)",
				in.Args, json.Valid(in.Args), utf8.Valid(in.Args), len(in.Args), fuzzLimit)
		}
		if len(args) > fuzzLimit {
			t.Fatalf("accepted %d bytes of args, limit %d", len(args), fuzzLimit)
		}
		if in.Metadata != nil && (!json.Valid(in.Metadata) || in.Metadata[0] != '{' || !utf8.Valid(in.Metadata)) {
			t.Fatalf("metadata %q is not a JSON object", in.Metadata)
		}
		if (s.Unique != nil) != (in.UniqueKey != "") || (in.UniqueKey != "" && len(in.UniqueKey) != 64) {
			t.Fatalf("unique %+v but key %q", s.Unique, in.UniqueKey)
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
