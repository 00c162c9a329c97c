package job_test

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
)

func TestFetchLess(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		a, b job.Job
		want bool
	}{
		{"lower priority number first", job.Job{ID: 9, Priority: 1, ScheduledAt: t0.Add(time.Hour)}, job.Job{ID: 1, Priority: 2, ScheduledAt: t0}, true},
		{"higher priority number later", job.Job{ID: 1, Priority: 2, ScheduledAt: t0}, job.Job{ID: 9, Priority: 1, ScheduledAt: t0.Add(time.Hour)}, false},
		{"same priority, earlier scheduled first", job.Job{ID: 9, Priority: 5, ScheduledAt: t0}, job.Job{ID: 1, Priority: 5, ScheduledAt: t0.Add(time.Microsecond)}, true},
		{"same priority, later scheduled later", job.Job{ID: 1, Priority: 5, ScheduledAt: t0.Add(time.Microsecond)}, job.Job{ID: 9, Priority: 5, ScheduledAt: t0}, false},
		{"same priority and time, lower id first", job.Job{ID: 1, Priority: 5, ScheduledAt: t0}, job.Job{ID: 2, Priority: 5, ScheduledAt: t0}, true},
		{"same priority and time, higher id later", job.Job{ID: 2, Priority: 5, ScheduledAt: t0}, job.Job{ID: 1, Priority: 5, ScheduledAt: t0}, false},
		// Equal instants in different zones are equal times, so the id decides.
		{"same instant in another zone, id decides", job.Job{ID: 2, Priority: 5, ScheduledAt: t0.In(time.FixedZone("X", 7200))}, job.Job{ID: 1, Priority: 5, ScheduledAt: t0}, false},
		{"identical is not less", job.Job{ID: 1, Priority: 5, ScheduledAt: t0}, job.Job{ID: 1, Priority: 5, ScheduledAt: t0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := job.FetchLess(&tt.a, &tt.b); got != tt.want {
				t.Errorf("FetchLess(a, b) = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFetchLessSortsShuffled(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	// want is in fetch order by construction.
	var want []*job.Job
	id := job.ID(0)
	for _, prio := range []int{1, 2, 5, 9} {
		for _, at := range []time.Duration{-time.Hour, 0, time.Microsecond, time.Hour} {
			for range 3 {
				id++
				want = append(want, &job.Job{ID: id, Priority: prio, ScheduledAt: t0.Add(at)})
			}
		}
	}
	// Give later ids earlier times in one group, so that the id is not
	// simply the answer everywhere.
	want[0].ID, want[len(want)-1].ID = want[len(want)-1].ID, want[0].ID
	slices.SortStableFunc(want, cmpFetch)

	r := rand.New(rand.NewPCG(1, 2))
	for i := range 20 {
		got := slices.Clone(want)
		r.Shuffle(len(got), func(i, j int) { got[i], got[j] = got[j], got[i] })
		slices.SortFunc(got, cmpFetch)
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("shuffle %d: position %d holds id %d (prio %d, at %v), want id %d",
					i, k, got[k].ID, got[k].Priority, got[k].ScheduledAt, want[k].ID)
			}
		}
	}
	// Check the order of the reference itself against the rule written
	// out, so that cmpFetch cannot hide a wrong FetchLess.
	for k := 1; k < len(want); k++ {
		a, b := want[k-1], want[k]
		ok := a.Priority < b.Priority ||
			a.Priority == b.Priority && a.ScheduledAt.Before(b.ScheduledAt) ||
			a.Priority == b.Priority && a.ScheduledAt.Equal(b.ScheduledAt) && a.ID < b.ID
		if !ok {
			t.Errorf("sorted order breaks the rule at %d: %+v then %+v", k, a, b)
		}
	}
}

func cmpFetch(a, b *job.Job) int {
	switch {
	case job.FetchLess(a, b):
		return -1
	case job.FetchLess(b, a):
		return 1
	}
	return 0
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	zone := time.FixedZone("X", -5*3600)
	in := time.Date(2025, 6, 1, 7, 0, 0, 123456789, zone)
	got := job.Truncate(in)
	want := time.Date(2025, 6, 1, 12, 0, 0, 123456000, time.UTC)
	if got != want { // == also checks the location and the lack of a monotonic reading
		t.Errorf("Truncate(%v) = %v, want %v", in, got, want)
	}
	now := time.Now()
	if tr := job.Truncate(now); tr != job.Truncate(tr) {
		t.Errorf("Truncate is not idempotent on %v", now)
	}
}

func fullJob() *job.Job {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	at, fin, exp := t0.Add(time.Minute), t0.Add(2*time.Minute), t0.Add(3*time.Minute)
	return &job.Job{
		ID: 7, Kind: "email.send", Queue: "default",
		Args:     json.RawMessage(`{"to":"a@b"}`),
		Priority: 3, State: job.StateRunning, Attempt: 2, MaxAttempts: 5,
		Timeout:   time.Minute,
		UniqueKey: "abc",
		Tags:      []string{"x", "y"},
		Metadata:  json.RawMessage(`{"m":1}`),
		DependsOn: []job.ID{1, 2},
		Output:    json.RawMessage(`[1]`),
		Errors: []job.AttemptError{
			{Attempt: 1, At: t0, Message: "boom", Detail: "stack"},
		},
		CreatedAt: t0, ScheduledAt: t0,
		AttemptedAt: &at, FinalizedAt: &fin,
		AttemptedBy: "w1", LeaseToken: "tok", LeaseExpiresAt: &exp,
	}
}

func TestCloneIsDeep(t *testing.T) {
	t.Parallel()
	orig := fullJob()
	pristine := fullJob()
	c := orig.Clone()
	if c == orig {
		t.Fatal("Clone returned the same pointer")
	}
	if !reflect.DeepEqual(c, orig) {
		t.Fatalf("Clone differs from the original:\n got %+v\nwant %+v", c, orig)
	}

	// Mutate everything reachable from the clone.
	c.Args[0] = 'X'
	c.Metadata[0] = 'X'
	c.Output[0] = 'X'
	c.Tags[0] = "changed"
	c.DependsOn[0] = 99
	c.Errors[0].Message = "changed"
	*c.AttemptedAt = c.AttemptedAt.Add(time.Hour)
	*c.FinalizedAt = c.FinalizedAt.Add(time.Hour)
	*c.LeaseExpiresAt = c.LeaseExpiresAt.Add(time.Hour)
	c.Tags = append(c.Tags, "more")
	c.Kind = "other"

	if !reflect.DeepEqual(orig, pristine) {
		t.Errorf("mutating the clone changed the original:\n got %+v\nwant %+v", orig, pristine)
	}
}

func TestCloneAppendDoesNotAlias(t *testing.T) {
	t.Parallel()
	orig := fullJob()
	// Spare capacity in the original must not be shared with the clone.
	orig.Tags = make([]string, 1, 8)
	orig.Tags[0] = "a"
	c := orig.Clone()
	c.Tags = append(c.Tags, "b")
	orig.Tags = append(orig.Tags, "c")
	if c.Tags[1] != "b" {
		t.Errorf("clone's appended tag = %q, want b (shares the original's array)", c.Tags[1])
	}
}

func TestCloneNil(t *testing.T) {
	t.Parallel()
	var j *job.Job
	if j.Clone() != nil {
		t.Error("(*Job)(nil).Clone() != nil")
	}
	empty := &job.Job{}
	if c := empty.Clone(); !reflect.DeepEqual(c, empty) {
		t.Errorf("Clone of a zero Job = %+v, want a zero Job", c)
	}
}
