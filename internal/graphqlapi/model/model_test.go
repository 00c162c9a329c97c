package model_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/graphqlapi/model"
	"github.com/droverhq/drover/internal/job"
)

func TestJobID(t *testing.T) {
	t.Parallel()
	good := map[string]any{"7": "7", "int": 7, "int64": int64(7), "number": json.Number("7")}
	for name, v := range good {
		if id, err := model.UnmarshalJobID(v); err != nil || id != 7 {
			t.Errorf("%s: %d, %v; want 7", name, id, err)
		}
	}
	for _, v := range []any{"0", "-3", "x", "1.5", "99999999999999999999", 1.5, true, nil} {
		if id, err := model.UnmarshalJobID(v); err == nil {
			t.Errorf("%#v: %d, want an error", v, id)
		}
	}
	var b bytes.Buffer
	model.MarshalJobID(42).MarshalGQL(&b)
	if b.String() != `"42"` {
		t.Errorf("MarshalJobID(42) wrote %s, want \"42\"", b.String())
	}
}

func TestRawJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   any
		want string
	}{
		{map[string]any{"b": json.Number("12345678901234567890"), "a": []any{"<x>", nil, true}}, `{"a":["<x>",null,true],"b":12345678901234567890}`},
		{"plain", `"plain"`},
		{nil, `null`},
	}
	for _, c := range cases {
		got, err := model.UnmarshalRawJSON(c.in)
		if err != nil || string(got) != c.want {
			t.Errorf("UnmarshalRawJSON(%#v) = %s, %v; want %s", c.in, got, err, c.want)
		}
	}
	var b bytes.Buffer
	model.MarshalRawJSON(json.RawMessage(`{"x":[1,2]}`)).MarshalGQL(&b)
	if b.String() != `{"x":[1,2]}` {
		t.Errorf("MarshalRawJSON wrote %s", b.String())
	}
	b.Reset()
	model.MarshalRawJSON(nil).MarshalGQL(&b)
	if b.String() != "null" {
		t.Errorf("MarshalRawJSON(nil) wrote %s, want null", b.String())
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	if d, err := model.UnmarshalDuration("1.5s"); err != nil || d != 1500*time.Millisecond {
		t.Errorf("1.5s: %v, %v", d, err)
	}
	for _, v := range []any{"soon", 5, ""} {
		if _, err := model.UnmarshalDuration(v); err == nil {
			t.Errorf("%#v: no error", v)
		}
	}
	var b bytes.Buffer
	model.MarshalDuration(90 * time.Second).MarshalGQL(&b)
	if b.String() != `"1m30s"` {
		t.Errorf("MarshalDuration wrote %s", b.String())
	}
}

func TestStates(t *testing.T) {
	t.Parallel()
	for _, st := range job.States {
		got, err := model.UnmarshalJobState(string(st))
		if err != nil || got != st {
			t.Errorf("%s: %s, %v", st, got, err)
		}
	}
	if _, err := model.UnmarshalJobState("RUNNING"); err == nil {
		t.Error("RUNNING: the enum values are lower case, want an error")
	}
}

// TestOptionalFields checks that what REST omits when empty is null here.
func TestOptionalFields(t *testing.T) {
	t.Parallel()
	j := &model.Job{Job: &job.Job{ID: 1}}
	if j.OptUniqueKey() != nil || j.OptCreatedBy() != nil || j.OptLeaseToken() != nil || j.OptAttemptedBy() != nil || j.OptTimeout() != nil {
		t.Error("an empty job has non-null optional fields")
	}
	if j.AllTags() == nil || j.AllDependsOn() == nil || j.ErrorHistory() == nil {
		t.Error("an empty job has null lists")
	}
	j.Timeout, j.LeaseToken = time.Minute, "t"
	if *j.OptTimeout() != time.Minute || *j.OptLeaseToken() != "t" {
		t.Error("set optional fields read back wrong")
	}
	ev := &model.JobEvent{Event: engine.Event{Type: engine.EventPromoted, Queue: "q", Count: 3}}
	if ev.OptJobID() != nil || ev.OptKind() != nil || ev.OptFrom() != nil || ev.OptTo() != nil {
		t.Error("a promotion has a job id, kind or states")
	}
}
