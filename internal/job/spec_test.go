package job_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// testNow has nanoseconds and a zone, so that every test checks that
// Prepare truncates and converts it.
var testNow = time.Date(2025, 6, 1, 14, 30, 0, 123456789, time.FixedZone("CEST", 2*3600))

// nowUTC is testNow as Prepare stores it.
var nowUTC = time.Date(2025, 6, 1, 12, 30, 0, 123456000, time.UTC)

// nest returns n nested JSON arrays around 0.
func nest(n int) string {
	return strings.Repeat("[", n) + "0" + strings.Repeat("]", n)
}

// nestObj returns n nested JSON objects.
func nestObj(n int) string {
	return strings.Repeat(`{"a":`, n) + "0" + strings.Repeat("}", n)
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", "", false},
		{"one char", "a", true},
		{"every allowed class", "AZaz09_.:-", true},
		{"max length", strings.Repeat("a", job.MaxNameLen), true},
		{"one over max", strings.Repeat("a", job.MaxNameLen+1), false},
		{"multi-byte counted in bytes", strings.Repeat("a", job.MaxNameLen-1) + "é", false},
		{"space", "a b", false},
		{"leading space", " a", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"nul", "a\x00", false},
		{"unicode letter", "é", false},
		{"cjk", "日本", false},
		{"emoji", "😀", false},
		{"invalid utf-8", "a\xff", false},
		{"plus", "a+b", false},
		{"at", "a@b", false},
		{"star", "*", false},
		{"comma", "a,b", false},
		{"quote", `a"b`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := job.ValidateName(tt.in)
			if (err == nil) != tt.ok {
				t.Errorf("ValidateName(%q) = %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

func TestPrepareDefaults(t *testing.T) {
	t.Parallel()
	s := job.Spec{Kind: "email.send"}
	got, err := s.Prepare(testNow, job.Limits{}, "")
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	want := &job.Insert{
		Kind:        "email.send",
		Queue:       job.DefaultQueue,
		Args:        json.RawMessage("null"),
		Priority:    job.DefaultPriority,
		MaxAttempts: job.DefaultMaxAttempts,
		ScheduledAt: nowUTC,
		CreatedAt:   nowUTC,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Prepare of a minimal spec:\n got %+v\nwant %+v", got, want)
	}
	if got.CreatedAt.Location() != time.UTC || got.ScheduledAt.Location() != time.UTC {
		t.Errorf("times are not in UTC: %v, %v", got.CreatedAt, got.ScheduledAt)
	}
	if job.DefaultQueue != "default" || job.DefaultPriority != 5 || job.DefaultMaxAttempts != 25 {
		t.Errorf("documented defaults changed: queue %q, priority %d, max_attempts %d",
			job.DefaultQueue, job.DefaultPriority, job.DefaultMaxAttempts)
	}
}

func TestPrepareValid(t *testing.T) {
	t.Parallel()
	runAt := time.Date(2030, 1, 2, 3, 4, 5, 999999999, time.FixedZone("X", -7*3600))
	tags32 := make([]string, job.MaxTags)
	for i := range tags32 {
		tags32[i] = fmt.Sprintf("t%d", i)
	}
	deps1000 := make([]job.ID, job.MaxDependsOn)
	for i := range deps1000 {
		deps1000[i] = job.ID(job.MaxDependsOn - i)
	}
	tests := []struct {
		name  string
		spec  job.Spec
		lim   job.Limits
		check func(t *testing.T, in *job.Insert)
	}{
		{"kind at max length", job.Spec{Kind: strings.Repeat("k", 128)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Kind != strings.Repeat("k", 128) {
				t.Errorf("Kind = %q", in.Kind)
			}
		}},
		{"kind with every allowed char", job.Spec{Kind: "a-Z_0.9:x"}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Kind != "a-Z_0.9:x" {
				t.Errorf("Kind = %q", in.Kind)
			}
		}},
		{"queue kept", job.Spec{Kind: "k", Queue: "q:high"}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Queue != "q:high" {
				t.Errorf("Queue = %q", in.Queue)
			}
		}},
		{"queue at max length", job.Spec{Kind: "k", Queue: strings.Repeat("q", 128)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Queue != strings.Repeat("q", 128) {
				t.Errorf("Queue = %q", in.Queue)
			}
		}},
		{"max_attempts 1", job.Spec{Kind: "k", MaxAttempts: 1}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.MaxAttempts != 1 {
				t.Errorf("MaxAttempts = %d", in.MaxAttempts)
			}
		}},
		{"max_attempts large", job.Spec{Kind: "k", MaxAttempts: 1000}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.MaxAttempts != 1000 {
				t.Errorf("MaxAttempts = %d", in.MaxAttempts)
			}
		}},
		{"timeout kept", job.Spec{Kind: "k", Timeout: 90 * time.Second}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Timeout != 90*time.Second {
				t.Errorf("Timeout = %v", in.Timeout)
			}
		}},
		{"run_at used, truncated, in UTC", job.Spec{Kind: "k", RunAt: runAt}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			want := time.Date(2030, 1, 2, 10, 4, 5, 999999000, time.UTC)
			if in.ScheduledAt != want {
				t.Errorf("ScheduledAt = %v, want %v", in.ScheduledAt, want)
			}
			if in.CreatedAt != nowUTC {
				t.Errorf("CreatedAt = %v, want %v", in.CreatedAt, nowUTC)
			}
		}},
		{"run_at in the past kept", job.Spec{Kind: "k", RunAt: nowUTC.Add(-time.Hour)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.ScheduledAt != nowUTC.Add(-time.Hour) {
				t.Errorf("ScheduledAt = %v", in.ScheduledAt)
			}
		}},
		{"delay added to now", job.Spec{Kind: "k", Delay: 90 * time.Minute}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if want := nowUTC.Add(90 * time.Minute); in.ScheduledAt != want {
				t.Errorf("ScheduledAt = %v, want %v", in.ScheduledAt, want)
			}
		}},
		{"delay truncated to microseconds", job.Spec{Kind: "k", Delay: 1999 * time.Nanosecond}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if want := nowUTC.Add(time.Microsecond); in.ScheduledAt != want {
				t.Errorf("ScheduledAt = %v, want %v", in.ScheduledAt, want)
			}
		}},
		{"tags at the limit, order kept", job.Spec{Kind: "k", Tags: tags32}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if !reflect.DeepEqual(in.Tags, tags32) {
				t.Errorf("Tags = %v", in.Tags)
			}
		}},
		{"empty tags slice gives nil", job.Spec{Kind: "k", Tags: []string{}}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Tags != nil {
				t.Errorf("Tags = %#v, want nil", in.Tags)
			}
		}},
		{"metadata compacted", job.Spec{Kind: "k", Metadata: json.RawMessage(" { \"a\" : [ 1 , 2 ] } ")}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Metadata) != `{"a":[1,2]}` {
				t.Errorf("Metadata = %s", in.Metadata)
			}
		}},
		{"metadata empty object", job.Spec{Kind: "k", Metadata: json.RawMessage(`{}`)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Metadata) != `{}` {
				t.Errorf("Metadata = %s", in.Metadata)
			}
		}},
		{"metadata empty bytes", job.Spec{Kind: "k", Metadata: json.RawMessage{}}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Metadata != nil {
				t.Errorf("Metadata = %q, want nil", in.Metadata)
			}
		}},
		{"metadata white space", job.Spec{Kind: "k", Metadata: json.RawMessage(" \n\t\r ")}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if in.Metadata != nil {
				t.Errorf("Metadata = %q, want nil", in.Metadata)
			}
		}},
		{"metadata at its size limit", job.Spec{Kind: "k", Metadata: json.RawMessage(`{"a":"` + strings.Repeat("x", job.MaxMetadataBytes-8) + `"}`)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if len(in.Metadata) != job.MaxMetadataBytes {
				t.Errorf("len(Metadata) = %d, want %d", len(in.Metadata), job.MaxMetadataBytes)
			}
		}},
		{"depends_on sorted and deduplicated", job.Spec{Kind: "k", DependsOn: []job.ID{5, 3, 5, 1, 3, 9}}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if want := []job.ID{1, 3, 5, 9}; !reflect.DeepEqual(in.DependsOn, want) {
				t.Errorf("DependsOn = %v, want %v", in.DependsOn, want)
			}
		}},
		{"depends_on at the limit", job.Spec{Kind: "k", DependsOn: deps1000}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if len(in.DependsOn) != job.MaxDependsOn || in.DependsOn[0] != 1 || in.DependsOn[job.MaxDependsOn-1] != job.MaxDependsOn {
				t.Errorf("DependsOn has %d ids from %d", len(in.DependsOn), in.DependsOn[0])
			}
		}},
		{"args empty is null", job.Spec{Kind: "k", Args: json.RawMessage{}}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != "null" {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args white space is null", job.Spec{Kind: "k", Args: json.RawMessage(" \r\n\t")}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != "null" {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args compacted", job.Spec{Kind: "k", Args: json.RawMessage("{\n  \"to\": \"a b\",\n  \"n\": [1, 2.50, -3e2]\n}\n")}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if want := `{"to":"a b","n":[1,2.50,-3e2]}`; string(in.Args) != want {
				t.Errorf("Args = %s, want %s", in.Args, want)
			}
		}},
		{"args non-object kept", job.Spec{Kind: "k", Args: json.RawMessage(` "s" `)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != `"s"` {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args with multi-byte UTF-8 kept", job.Spec{Kind: "k", Args: json.RawMessage(`["héllo 日本 😀"]`)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != `["héllo 日本 😀"]` {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args at the default limit", job.Spec{Kind: "k", Args: json.RawMessage(`"` + strings.Repeat("x", job.DefaultMaxArgsBytes-2) + `"`)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if len(in.Args) != job.DefaultMaxArgsBytes {
				t.Errorf("len(Args) = %d", len(in.Args))
			}
		}},
		{"args at a custom limit", job.Spec{Kind: "k", Args: json.RawMessage(`"12345678"`)}, job.Limits{MaxArgsBytes: 10}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != `"12345678"` {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args over the default limit under a larger custom limit", job.Spec{Kind: "k", Args: json.RawMessage(`"` + strings.Repeat("x", job.DefaultMaxArgsBytes) + `"`)}, job.Limits{MaxArgsBytes: 2 << 20}, func(t *testing.T, in *job.Insert) {
			if len(in.Args) != job.DefaultMaxArgsBytes+2 {
				t.Errorf("len(Args) = %d", len(in.Args))
			}
		}},
		{"negative limit means the default", job.Spec{Kind: "k", Args: json.RawMessage(`"12345678"`)}, job.Limits{MaxArgsBytes: -1}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != `"12345678"` {
				t.Errorf("Args = %s", in.Args)
			}
		}},
		{"args nested exactly MaxJSONDepth", job.Spec{Kind: "k", Args: json.RawMessage(nest(job.MaxJSONDepth))}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != nest(job.MaxJSONDepth) {
				t.Errorf("Args changed")
			}
		}},
		{"objects nested exactly MaxJSONDepth", job.Spec{Kind: "k", Args: json.RawMessage(nestObj(job.MaxJSONDepth))}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if string(in.Args) != nestObj(job.MaxJSONDepth) {
				t.Errorf("Args changed")
			}
		}},
		{"brackets inside strings do not count", job.Spec{Kind: "k", Args: json.RawMessage(`["` + strings.Repeat("[{", 100) + `"]`)}, job.Limits{}, func(t *testing.T, in *job.Insert) {
			if len(in.Args) != 204 {
				t.Errorf("len(Args) = %d", len(in.Args))
			}
		}},
		{"escaped quote does not end a string", job.Spec{Kind: "k", Args: json.RawMessage(`["\"` + strings.Repeat("[", 100) + `"]`)}, job.Limits{}, nil},
		{"brackets in keys do not count", job.Spec{Kind: "k", Args: json.RawMessage(`{"` + strings.Repeat("{", 100) + `":1}`)}, job.Limits{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in, err := tt.spec.Prepare(testNow, tt.lim, "")
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if tt.check != nil {
				tt.check(t, in)
			}
		})
	}
}

func TestPreparePriority(t *testing.T) {
	t.Parallel()
	for p := -2; p <= 11; p++ {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			t.Parallel()
			s := job.Spec{Kind: "k", Priority: p}
			in, err := s.Prepare(testNow, job.Limits{}, "")
			switch {
			case p == 0:
				if err != nil || in.Priority != job.DefaultPriority {
					t.Errorf("priority 0: got %v, %v; want the default %d", in, err, job.DefaultPriority)
				}
			case p >= job.MinPriority && p <= job.MaxPriority:
				if err != nil || in.Priority != p {
					t.Errorf("priority %d: got %v, %v", p, in, err)
				}
			default:
				checkValidationError(t, err, "priority", false)
			}
		})
	}
	if job.MinPriority != 1 || job.MaxPriority != 9 {
		t.Errorf("priority range is %d..%d, documented as 1..9", job.MinPriority, job.MaxPriority)
	}
}

// checkValidationError fails t unless err is a *ValidationError for field
// that matches ErrInvalid, and ErrTooLarge exactly when tooLarge.
func checkValidationError(t *testing.T, err error, field string, tooLarge bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one for %s", field)
	}
	var ve *job.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	if ve.Field != field {
		t.Errorf("Field = %q, want %q (error %v)", ve.Field, field, err)
	}
	if ve.Message == "" {
		t.Errorf("empty Message for %s", field)
	}
	if !errors.Is(err, job.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	if ve.TooLarge != tooLarge || errors.Is(err, job.ErrTooLarge) != tooLarge {
		t.Errorf("error %v: TooLarge = %v, errors.Is(ErrTooLarge) = %v, want %v",
			err, ve.TooLarge, errors.Is(err, job.ErrTooLarge), tooLarge)
	}
	wantCode := "invalid_argument"
	if tooLarge {
		wantCode = "too_large"
	}
	if c := job.Code(err); c != wantCode {
		t.Errorf("Code(%v) = %q, want %q", err, c, wantCode)
	}
}

func TestPrepareInvalid(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", job.MaxNameLen+1)
	tags33 := make([]string, job.MaxTags+1)
	for i := range tags33 {
		tags33[i] = "t"
	}
	deps1001 := make([]job.ID, job.MaxDependsOn+1)
	for i := range deps1001 {
		deps1001[i] = 1 // duplicates still count against the limit
	}
	tests := []struct {
		name     string
		spec     job.Spec
		lim      job.Limits
		field    string
		tooLarge bool
	}{
		{"kind empty", job.Spec{}, job.Limits{}, "kind", false},
		{"kind too long", job.Spec{Kind: long}, job.Limits{}, "kind", false},
		{"kind with space", job.Spec{Kind: "send email"}, job.Limits{}, "kind", false},
		{"kind with slash", job.Spec{Kind: "email/send"}, job.Limits{}, "kind", false},
		{"kind with unicode", job.Spec{Kind: "émail"}, job.Limits{}, "kind", false},
		{"kind with nul", job.Spec{Kind: "a\x00"}, job.Limits{}, "kind", false},
		{"kind with invalid utf-8", job.Spec{Kind: "a\xff"}, job.Limits{}, "kind", false},
		{"queue too long", job.Spec{Kind: "k", Queue: long}, job.Limits{}, "queue", false},
		{"queue with space", job.Spec{Kind: "k", Queue: "my queue"}, job.Limits{}, "queue", false},
		{"queue with slash", job.Spec{Kind: "k", Queue: "a/b"}, job.Limits{}, "queue", false},
		{"queue with unicode", job.Spec{Kind: "k", Queue: "日本"}, job.Limits{}, "queue", false},
		{"queue of a space", job.Spec{Kind: "k", Queue: " "}, job.Limits{}, "queue", false},
		{"priority 10", job.Spec{Kind: "k", Priority: 10}, job.Limits{}, "priority", false},
		{"priority -1", job.Spec{Kind: "k", Priority: -1}, job.Limits{}, "priority", false},
		{"max_attempts -1", job.Spec{Kind: "k", MaxAttempts: -1}, job.Limits{}, "max_attempts", false},
		{"timeout negative", job.Spec{Kind: "k", Timeout: -time.Nanosecond}, job.Limits{}, "timeout", false},
		{"run_at and delay", job.Spec{Kind: "k", RunAt: nowUTC, Delay: time.Second}, job.Limits{}, "run_at", false},
		{"run_at and negative delay", job.Spec{Kind: "k", RunAt: nowUTC, Delay: -time.Second}, job.Limits{}, "run_at", false},
		{"delay negative", job.Spec{Kind: "k", Delay: -time.Nanosecond}, job.Limits{}, "delay", false},
		{"too many tags", job.Spec{Kind: "k", Tags: tags33}, job.Limits{}, "tags", false},
		{"empty tag", job.Spec{Kind: "k", Tags: []string{"a", ""}}, job.Limits{}, "tags[1]", false},
		{"tag with space", job.Spec{Kind: "k", Tags: []string{"a", "b", "c d"}}, job.Limits{}, "tags[2]", false},
		{"tag too long", job.Spec{Kind: "k", Tags: []string{long}}, job.Limits{}, "tags[0]", false},
		{"tag with unicode", job.Spec{Kind: "k", Tags: []string{"ü"}}, job.Limits{}, "tags[0]", false},
		{"metadata array", job.Spec{Kind: "k", Metadata: json.RawMessage(`[1]`)}, job.Limits{}, "metadata", false},
		{"metadata string", job.Spec{Kind: "k", Metadata: json.RawMessage(`"x"`)}, job.Limits{}, "metadata", false},
		{"metadata null", job.Spec{Kind: "k", Metadata: json.RawMessage(`null`)}, job.Limits{}, "metadata", false},
		{"metadata number", job.Spec{Kind: "k", Metadata: json.RawMessage(`1`)}, job.Limits{}, "metadata", false},
		{"metadata invalid JSON", job.Spec{Kind: "k", Metadata: json.RawMessage(`{"a":}`)}, job.Limits{}, "metadata", false},
		{"metadata invalid UTF-8", job.Spec{Kind: "k", Metadata: json.RawMessage("{\"a\":\"\xff\"}")}, job.Limits{}, "metadata", false},
		{"metadata too deep", job.Spec{Kind: "k", Metadata: json.RawMessage(nestObj(job.MaxJSONDepth + 1))}, job.Limits{}, "metadata", false},
		{"metadata of a form feed", job.Spec{Kind: "k", Metadata: json.RawMessage("\f")}, job.Limits{}, "metadata", false},
		{"metadata of a no-break space", job.Spec{Kind: "k", Metadata: json.RawMessage("\u00a0")}, job.Limits{}, "metadata", false},
		{"metadata too large", job.Spec{Kind: "k", Metadata: json.RawMessage(`{"a":"` + strings.Repeat("x", job.MaxMetadataBytes-7) + `"}`)}, job.Limits{}, "metadata", true},
		{"depends_on zero", job.Spec{Kind: "k", DependsOn: []job.ID{1, 2, 0}}, job.Limits{}, "depends_on[2]", false},
		{"depends_on negative", job.Spec{Kind: "k", DependsOn: []job.ID{-5}}, job.Limits{}, "depends_on[0]", false},
		{"depends_on too many", job.Spec{Kind: "k", DependsOn: deps1001}, job.Limits{}, "depends_on", false},
		{"args invalid JSON", job.Spec{Kind: "k", Args: json.RawMessage(`{`)}, job.Limits{}, "args", false},
		{"args single quotes", job.Spec{Kind: "k", Args: json.RawMessage(`{'a':1}`)}, job.Limits{}, "args", false},
		{"args two values", job.Spec{Kind: "k", Args: json.RawMessage(`1 2`)}, job.Limits{}, "args", false},
		{"args trailing comma", job.Spec{Kind: "k", Args: json.RawMessage(`[1,]`)}, job.Limits{}, "args", false},
		{"args bare word", job.Spec{Kind: "k", Args: json.RawMessage(`hello`)}, job.Limits{}, "args", false},
		{"args invalid UTF-8 in a string", job.Spec{Kind: "k", Args: json.RawMessage("\"a\xffb\"")}, job.Limits{}, "args", false},
		{"args truncated rune", job.Spec{Kind: "k", Args: json.RawMessage("\"\xe6\x97\"")}, job.Limits{}, "args", false},
		{"args surrogate encoded in UTF-8", job.Spec{Kind: "k", Args: json.RawMessage("\"\xed\xa0\x80\"")}, job.Limits{}, "args", false},
		{"args of a form feed", job.Spec{Kind: "k", Args: json.RawMessage("\f")}, job.Limits{}, "args", false},
		{"args of a vertical tab", job.Spec{Kind: "k", Args: json.RawMessage("\v")}, job.Limits{}, "args", false},
		{"args of a no-break space", job.Spec{Kind: "k", Args: json.RawMessage("\u00a0")}, job.Limits{}, "args", false},
		{"args over the default limit", job.Spec{Kind: "k", Args: json.RawMessage(`"` + strings.Repeat("x", job.DefaultMaxArgsBytes-1) + `"`)}, job.Limits{}, "args", true},
		{"args over a custom limit", job.Spec{Kind: "k", Args: json.RawMessage(`"123456789"`)}, job.Limits{MaxArgsBytes: 10}, "args", true},
		{"args white space counts against the limit", job.Spec{Kind: "k", Args: json.RawMessage(`1` + strings.Repeat(" ", 10))}, job.Limits{MaxArgsBytes: 10}, "args", true},
		{"args nested one too deep", job.Spec{Kind: "k", Args: json.RawMessage(nest(job.MaxJSONDepth + 1))}, job.Limits{}, "args", false},
		{"objects nested one too deep", job.Spec{Kind: "k", Args: json.RawMessage(nestObj(job.MaxJSONDepth + 1))}, job.Limits{}, "args", false},
		{"nesting after an escaped backslash counts", job.Spec{Kind: "k", Args: json.RawMessage(`["\\",` + nest(job.MaxJSONDepth) + `]`)}, job.Limits{}, "args", false},
		{"unique key and by_args", job.Spec{Kind: "k", Unique: &job.UniqueOpts{Key: "x", ByArgs: true}}, job.Limits{}, "unique", false},
		{"unique period negative", job.Spec{Kind: "k", Unique: &job.UniqueOpts{Period: -time.Second}}, job.Limits{}, "unique.period", false},
		{"unique key too long", job.Spec{Kind: "k", Unique: &job.UniqueOpts{Key: strings.Repeat("k", 1025)}}, job.Limits{}, "unique.key", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, prefix := range []string{"", "jobs[3]."} {
				in, err := tt.spec.Prepare(testNow, tt.lim, prefix)
				if in != nil {
					t.Errorf("prefix %q: Prepare returned %+v with error %v", prefix, in, err)
				}
				checkValidationError(t, err, prefix+tt.field, tt.tooLarge)
			}
		})
	}
}

func TestPrepareDoesNotAliasInput(t *testing.T) {
	t.Parallel()
	s := job.Spec{
		Kind:      "k",
		Args:      json.RawMessage(`{"a":1}`),
		Tags:      []string{"a", "b"},
		Metadata:  json.RawMessage(`{"m":1}`),
		DependsOn: []job.ID{2, 1},
	}
	in, err := s.Prepare(testNow, job.Limits{}, "")
	if err != nil {
		t.Fatal(err)
	}
	s.Args[2] = 'X'
	s.Tags[0] = "changed"
	s.Metadata[2] = 'X'
	s.DependsOn[0] = 99
	if string(in.Args) != `{"a":1}` || in.Tags[0] != "a" || string(in.Metadata) != `{"m":1}` ||
		!reflect.DeepEqual(in.DependsOn, []job.ID{1, 2}) {
		t.Errorf("mutating the spec changed the insert: %+v", in)
	}
	if !reflect.DeepEqual(s.DependsOn, []job.ID{99, 1}) {
		t.Errorf("Prepare reordered the caller's DependsOn: %v", s.DependsOn)
	}
}

func TestNormalizeJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		in       string
		max      int
		want     string // when ok
		ok       bool
		tooLarge bool
	}{
		{"nil is null", "", 100, "null", true, false},
		{"white space is null", " \t\r\n ", 100, "null", true, false},
		{"null", "null", 100, "null", true, false},
		{"true", " true ", 100, "true", true, false},
		{"number literal kept", "1.50e+3", 100, "1.50e+3", true, false},
		{"big integer kept", "123456789012345678901234567890", 100, "123456789012345678901234567890", true, false},
		{"string escapes kept", `"a\u00e9\n\"b"`, 100, `"a\u00e9\n\"b"`, true, false},
		{"html not escaped", `"<a&b>"`, 100, `"<a&b>"`, true, false},
		{"object compacted, key order kept", "{ \"b\" : 1 ,\n \"a\" : [ ] }", 100, `{"b":1,"a":[]}`, true, false},
		{"white space inside strings kept", `[ " a  b " ]`, 100, `[" a  b "]`, true, false},
		{"exactly max", `"12345678"`, 10, `"12345678"`, true, false},
		{"exactly MaxJSONDepth", nest(job.MaxJSONDepth), 1000, nest(job.MaxJSONDepth), true, false},
		{"one over max", `"123456789"`, 10, "", false, true},
		{"white space over max", strings.Repeat(" ", 11), 10, "", false, true},
		{"invalid JSON", `{"a"}`, 100, "", false, false},
		{"two values", `{} {}`, 100, "", false, false},
		{"invalid UTF-8", "\"\xc3\x28\"", 100, "", false, false},
		{"invalid UTF-8 outside a string", "[1]\xff", 100, "", false, false},
		{"overlong encoding", "\"\xc0\xaf\"", 100, "", false, false},
		{"lone UTF-8 continuation", "\"\x80\"", 100, "", false, false},
		{"byte order mark", "\xef\xbb\xbf{}", 100, "", false, false},
		{"nested one over MaxJSONDepth", nest(job.MaxJSONDepth + 1), 1000, "", false, false},
		{"form feed is not JSON white space", "\f", 100, "", false, false},
		{"vertical tab is not JSON white space", "\v", 100, "", false, false},
		{"no-break space is not JSON white space", "\u00a0", 100, "", false, false},
		{"next line is not JSON white space", "\u0085", 100, "", false, false},
		{"form feed around a value", "\f1\f", 100, "", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := job.NormalizeJSON(json.RawMessage(tt.in), tt.max, "output")
			if !tt.ok {
				if got != nil {
					t.Errorf("NormalizeJSON(%q) = %s with error %v, want nil", tt.in, got, err)
				}
				checkValidationError(t, err, "output", tt.tooLarge)
				return
			}
			if err != nil {
				t.Fatalf("NormalizeJSON(%q): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("NormalizeJSON(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalizeJSONDoesNotAlias(t *testing.T) {
	t.Parallel()
	in := json.RawMessage(`{"a":1}`)
	out, err := job.NormalizeJSON(in, 100, "args")
	if err != nil {
		t.Fatal(err)
	}
	in[1] = 'X'
	if string(out) != `{"a":1}` {
		t.Errorf("output shares memory with the input: %s", out)
	}
}

func TestCanonicalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"keys sorted at every level", `{"b":1,"a":{"d":[{"z":1,"y":2}],"c":2}}`, `{"a":{"c":2,"d":[{"y":2,"z":1}]},"b":1}`},
		{"white space removed", " { \"a\" : [ 1 , 2 ] } ", `{"a":[1,2]}`},
		{"numbers keep their text", `[1.50,1e3,-0,12345678901234567890123]`, `[1.50,1e3,-0,12345678901234567890123]`},
		{"escapes normalized", `"\u0041\/"`, `"A/"`},
		{"unicode kept", `"héllo 😀"`, `"héllo 😀"`},
		{"null", `null`, `null`},
		{"scalar", `true`, `true`},
		{"array order kept", `[3,1,2]`, `[3,1,2]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := job.CanonicalJSON(json.RawMessage(tt.in))
			if err != nil {
				t.Fatalf("CanonicalJSON(%s): %v", tt.in, err)
			}
			if string(got) != tt.want {
				t.Errorf("CanonicalJSON(%s) = %s, want %s", tt.in, got, tt.want)
			}
			again, err := job.CanonicalJSON(got)
			if err != nil || string(again) != string(got) {
				t.Errorf("CanonicalJSON is not idempotent: %s then %s (%v)", got, again, err)
			}
		})
	}
	for _, bad := range []string{``, `{`, `{"a":}`, `nope`} {
		if got, err := job.CanonicalJSON(json.RawMessage(bad)); err == nil {
			t.Errorf("CanonicalJSON(%q) = %s, want an error", bad, got)
		}
	}
}

func TestBaseBackoff(t *testing.T) {
	t.Parallel()
	const maxInt = int(^uint(0) >> 1)
	cap200 := (200*200*200*200 + 15) * time.Second
	tests := []struct {
		attempt int
		want    time.Duration
	}{
		{0, 15 * time.Second},
		{1, 16 * time.Second},
		{2, 31 * time.Second},
		{3, 96 * time.Second},
		{5, 640 * time.Second},
		{10, 10015 * time.Second},
		{25, 390640 * time.Second},
		{-1, 15 * time.Second},
		{-maxInt - 1, 15 * time.Second},
		{200, cap200},
		{201, cap200},
		{1 << 20, cap200},
		{maxInt, cap200},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.attempt), func(t *testing.T) {
			t.Parallel()
			if got := job.BaseBackoff(tt.attempt); got != tt.want {
				t.Errorf("BaseBackoff(%d) = %v, want %v", tt.attempt, got, tt.want)
			}
		})
	}
}

func TestBaseBackoffMonotonic(t *testing.T) {
	t.Parallel()
	const maxInt = int(^uint(0) >> 1)
	attempts := []int{-maxInt - 1, -1 << 40, -1}
	for a := 0; a <= 1000; a++ {
		attempts = append(attempts, a)
	}
	attempts = append(attempts, 1<<31, 1<<40, maxInt-1, maxInt)
	prev := time.Duration(0)
	for _, a := range attempts {
		d := job.BaseBackoff(a)
		if d < 15*time.Second {
			t.Fatalf("BaseBackoff(%d) = %v, below the 15s floor (overflow?)", a, d)
		}
		if d < prev {
			t.Fatalf("BaseBackoff(%d) = %v, less than %v for the attempt before", a, d, prev)
		}
		// The jittered value must not overflow either.
		if hi := d + d*3/10; hi < d {
			t.Fatalf("BaseBackoff(%d) = %v: adding 30%% overflows", a, d)
		}
		prev = d
	}
}

func TestDefaultBackoff(t *testing.T) {
	t.Parallel()
	const maxInt = int(^uint(0) >> 1)
	for _, attempt := range []int{-1, 0, 1, 2, 5, 25, 200, maxInt} {
		t.Run(fmt.Sprint(attempt), func(t *testing.T) {
			t.Parallel()
			base := job.BaseBackoff(attempt)
			hi := base + base*3/10
			seen := map[time.Duration]bool{}
			for range 2000 {
				d := job.DefaultBackoff(attempt)
				if d < base || d > hi {
					t.Fatalf("DefaultBackoff(%d) = %v, want within [%v, %v]", attempt, d, base, hi)
				}
				seen[d] = true
			}
			// The jitter range is billions of nanoseconds wide; 2000 draws
			// with fewer than 1000 distinct values means no real jitter.
			if len(seen) < 1000 {
				t.Errorf("DefaultBackoff(%d) gave only %d distinct values in 2000 draws", attempt, len(seen))
			}
		})
	}
}

func TestDefaultBackoffIsABackoff(t *testing.T) {
	t.Parallel()
	var b job.Backoff = job.DefaultBackoff
	if d := b(1); d < 16*time.Second {
		t.Errorf("Backoff(1) = %v", d)
	}
}

func TestTruncateUTF8(t *testing.T) {
	t.Parallel()
	// Runes of 1, 2, 3 and 4 bytes, so that every cut point falls inside
	// a rune of every width somewhere.
	s := "a" + "é" + "€" + "😀" + "b" + "😀" + "€" + "é"
	var boundaries []int
	for i := range s {
		boundaries = append(boundaries, i)
	}
	boundaries = append(boundaries, len(s))
	for n := 0; n <= len(s)+3; n++ {
		got := job.TruncateUTF8(s, n)
		want := 0
		for _, b := range boundaries {
			if b <= n {
				want = b
			}
		}
		if got != s[:want] {
			t.Errorf("TruncateUTF8(s, %d) = %q, want %q", n, got, s[:want])
		}
		if !strings.HasPrefix(s, got) || len(got) > n {
			t.Errorf("TruncateUTF8(s, %d) = %q is not a prefix of at most %d bytes", n, got, n)
		}
	}
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{"empty", "", 5, ""},
		{"zero", "abc", 0, ""},
		{"ascii", "abcdef", 3, "abc"},
		{"fits", "héllo", 100, "héllo"},
		{"exact", "héllo", 6, "héllo"},
		{"inside a two-byte rune", "é", 1, ""},
		{"inside a four-byte rune", "x😀", 4, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := job.TruncateUTF8(tt.s, tt.n); got != tt.want {
				t.Errorf("TruncateUTF8(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		})
	}
}

// TestTruncateUTF8InvalidInput checks that input that is not UTF-8 (an
// error message may hold anything) neither panics nor grows past n. Stray
// continuation bytes may make it cut earlier than needed; that is allowed.
func TestTruncateUTF8InvalidInput(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"ab\x80\x80\x80", "\x80\x80\x80\x80", "\xff\xfe", "a\xe2\x82", "\xf0\x9f\x98"} {
		for n := 0; n <= len(s)+1; n++ {
			got := job.TruncateUTF8(s, n)
			if len(got) > n || !strings.HasPrefix(s, got) {
				t.Errorf("TruncateUTF8(%q, %d) = %q", s, n, got)
			}
		}
	}
}

func TestTruncateUTF8ErrorLimits(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{job.MaxErrorMessageBytes, job.MaxErrorDetailBytes} {
		for shift := range 4 {
			// Put a 4-byte rune across the limit at each offset.
			s := strings.Repeat("x", limit-shift) + strings.Repeat("😀", 3)
			got := job.TruncateUTF8(s, limit)
			if len(got) > limit || !strings.HasPrefix(s, got) || len(got) < limit-3 {
				t.Errorf("limit %d shift %d: got %d bytes", limit, shift, len(got))
			}
			if got[len(got)-1] != 'x' && !strings.HasSuffix(got, "😀") {
				t.Errorf("limit %d shift %d: split a rune: %q", limit, shift, got[len(got)-4:])
			}
		}
	}
}
