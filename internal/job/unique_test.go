package job_test

import (
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// uniqueKey prepares a unique job of kind with args at now and returns its
// key and UniqueByPeriod.
func uniqueKey(t *testing.T, kind, args string, u job.UniqueOpts, now time.Time) (string, bool) {
	t.Helper()
	s := job.Spec{Kind: kind, Args: json.RawMessage(args), Unique: &u}
	in, err := s.Prepare(now, job.Limits{}, "")
	if err != nil {
		t.Fatalf("Prepare(kind %q, args %s, unique %+v): %v", kind, args, u, err)
	}
	if b, err := hex.DecodeString(in.UniqueKey); err != nil || len(b) != 32 {
		t.Fatalf("UniqueKey %q is not a hex SHA-256", in.UniqueKey)
	}
	return in.UniqueKey, in.UniqueByPeriod
}

func TestUniqueKeyNotUnique(t *testing.T) {
	t.Parallel()
	s := job.Spec{Kind: "k", Args: json.RawMessage(`{"a":1}`)}
	in, err := s.Prepare(testNow, job.Limits{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if in.UniqueKey != "" || in.UniqueByPeriod {
		t.Errorf("a spec without Unique got key %q, by period %v", in.UniqueKey, in.UniqueByPeriod)
	}
}

func TestUniqueKeySameOrDifferent(t *testing.T) {
	t.Parallel()
	type input struct {
		kind, args string
		u          job.UniqueOpts
	}
	tests := []struct {
		name string
		a, b input
		same bool
	}{
		{"same explicit key and kind", input{"k", `1`, job.UniqueOpts{Key: "x"}}, input{"k", `2`, job.UniqueOpts{Key: "x"}}, true},
		{"same key, different kind", input{"k1", `1`, job.UniqueOpts{Key: "x"}}, input{"k2", `1`, job.UniqueOpts{Key: "x"}}, false},
		{"different keys", input{"k", `1`, job.UniqueOpts{Key: "x"}}, input{"k", `1`, job.UniqueOpts{Key: "y"}}, false},
		{"kind only, different args", input{"k", `1`, job.UniqueOpts{}}, input{"k", `{"a":2}`, job.UniqueOpts{}}, true},
		{"kind only, different kind", input{"k1", `1`, job.UniqueOpts{}}, input{"k2", `1`, job.UniqueOpts{}}, false},
		{"by_args, reordered keys and white space", input{"k", `{"a":1,"b":[1,2],"c":{"y":1,"x":2}}`, job.UniqueOpts{ByArgs: true}}, input{"k", "{ \"c\" : {\"x\":2, \"y\":1},\n\"b\":[ 1,2 ], \"a\": 1 }", job.UniqueOpts{ByArgs: true}}, true},
		{"by_args, equivalent escapes", input{"k", `{"a":"é"}`, job.UniqueOpts{ByArgs: true}}, input{"k", `{"\u0061":"\u00e9"}`, job.UniqueOpts{ByArgs: true}}, true},
		{"by_args, different values", input{"k", `{"a":1}`, job.UniqueOpts{ByArgs: true}}, input{"k", `{"a":2}`, job.UniqueOpts{ByArgs: true}}, false},
		{"by_args, different types", input{"k", `{"a":1}`, job.UniqueOpts{ByArgs: true}}, input{"k", `{"a":"1"}`, job.UniqueOpts{ByArgs: true}}, false},
		{"by_args, array order matters", input{"k", `[1,2]`, job.UniqueOpts{ByArgs: true}}, input{"k", `[2,1]`, job.UniqueOpts{ByArgs: true}}, false},
		{"by_args, different kind", input{"k1", `{"a":1}`, job.UniqueOpts{ByArgs: true}}, input{"k2", `{"a":1}`, job.UniqueOpts{ByArgs: true}}, false},
		{"by_args, empty and null args", input{"k", ``, job.UniqueOpts{ByArgs: true}}, input{"k", `null`, job.UniqueOpts{ByArgs: true}}, true},
		{"by_args differs from kind only", input{"k", `null`, job.UniqueOpts{ByArgs: true}}, input{"k", `null`, job.UniqueOpts{}}, false},
		{"explicit key differs from kind only", input{"k", `1`, job.UniqueOpts{Key: "kind"}}, input{"k", `1`, job.UniqueOpts{}}, false},
		{"period changes the key", input{"k", `1`, job.UniqueOpts{Key: "x"}}, input{"k", `1`, job.UniqueOpts{Key: "x", Period: time.Hour}}, false},
		{"different periods differ", input{"k", `1`, job.UniqueOpts{Key: "x", Period: time.Hour}}, input{"k", `1`, job.UniqueOpts{Key: "x", Period: 2 * time.Hour}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ka, _ := uniqueKey(t, tt.a.kind, tt.a.args, tt.a.u, testNow)
			kb, _ := uniqueKey(t, tt.b.kind, tt.b.args, tt.b.u, testNow)
			if (ka == kb) != tt.same {
				t.Errorf("keys %s and %s: same = %v, want %v", ka, kb, ka == kb, tt.same)
			}
		})
	}
}

func TestUniqueKeyDoesNotDependOnOtherFields(t *testing.T) {
	t.Parallel()
	u := &job.UniqueOpts{ByArgs: true}
	a := job.Spec{Kind: "k", Args: json.RawMessage(`{"a":1}`), Unique: u}
	b := job.Spec{
		Kind: "k", Args: json.RawMessage(`{"a":1}`), Unique: u,
		Queue: "other", Priority: 1, MaxAttempts: 3, Delay: time.Hour,
		Tags: []string{"t"}, Metadata: json.RawMessage(`{"m":1}`), DependsOn: []job.ID{1},
	}
	ia, err := a.Prepare(testNow, job.Limits{}, "")
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.Prepare(testNow.Add(time.Minute), job.Limits{}, "")
	if err != nil {
		t.Fatal(err)
	}
	if ia.UniqueKey != ib.UniqueKey {
		t.Errorf("queue, priority, schedule, tags, metadata or time changed a key without a period")
	}
}

func TestUniqueKeyPeriod(t *testing.T) {
	t.Parallel()
	// Windows are aligned to the Unix epoch, so whole UTC hours are
	// window boundaries for a one-hour period.
	hour := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		period time.Duration
		t1, t2 time.Time
		same   bool
	}{
		{"start and end of one window", time.Hour, hour, hour.Add(time.Hour - time.Microsecond), true},
		{"middle of one window", time.Hour, hour.Add(10 * time.Minute), hour.Add(50 * time.Minute), true},
		{"same instant in different zones", time.Hour, hour.Add(time.Minute), hour.Add(time.Minute).In(time.FixedZone("X", 5400)), true},
		{"across a boundary by a microsecond", time.Hour, hour.Add(-time.Microsecond), hour, false},
		{"next window", time.Hour, hour, hour.Add(time.Hour), false},
		{"far apart", time.Hour, hour, hour.Add(24 * time.Hour), false},
		{"daily window", 24 * time.Hour, time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), time.Date(2025, 6, 1, 23, 59, 59, 0, time.UTC), true},
		{"daily window next day", 24 * time.Hour, time.Date(2025, 6, 1, 23, 59, 59, 0, time.UTC), time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC), false},
		// Prepare truncates now to microseconds before it picks the window:
		// untruncated, 700ns would fall in the next 500ns window.
		{"now truncated before picking the window", 500 * time.Nanosecond, hour, hour.Add(700), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u := job.UniqueOpts{Key: "x", Period: tt.period}
			k1, p1 := uniqueKey(t, "k", `1`, u, tt.t1)
			k2, p2 := uniqueKey(t, "k", `1`, u, tt.t2)
			if (k1 == k2) != tt.same {
				t.Errorf("keys at %v and %v: same = %v, want %v", tt.t1, tt.t2, k1 == k2, tt.same)
			}
			if !p1 || !p2 {
				t.Errorf("UniqueByPeriod = %v, %v with a period", p1, p2)
			}
		})
	}
}

func TestUniqueByPeriodOnlyWithPeriod(t *testing.T) {
	t.Parallel()
	for _, u := range []job.UniqueOpts{{}, {Key: "x"}, {ByArgs: true}} {
		key1, byPeriod := uniqueKey(t, "k", `1`, u, testNow)
		if byPeriod {
			t.Errorf("%+v: UniqueByPeriod = true without a period", u)
		}
		// Without a period, time does not change the key.
		key2, _ := uniqueKey(t, "k", `1`, u, testNow.Add(1000*time.Hour))
		if key1 != key2 {
			t.Errorf("%+v: key changed with time but has no period", u)
		}
		u.Period = time.Minute
		if _, byPeriod := uniqueKey(t, "k", `1`, u, testNow); !byPeriod {
			t.Errorf("%+v: UniqueByPeriod = false with a period", u)
		}
	}
}

func TestUniqueKeyAtLengthLimit(t *testing.T) {
	t.Parallel()
	long := make([]byte, 1024)
	for i := range long {
		long[i] = 'k'
	}
	uniqueKey(t, "k", `1`, job.UniqueOpts{Key: string(long)}, testNow)
}
