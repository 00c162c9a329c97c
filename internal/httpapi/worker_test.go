package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// longPollDeadline bounds how long a test waits for a long poll that
// should answer long before it; it only fails a broken test, never times
// a working one.
const longPollDeadline = 30 * time.Second

func TestLeaseInFetchOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ids := map[string]int64{}
	for _, j := range []struct {
		name     string
		priority int
		queue    string
	}{
		{"p5", 5, "q1"}, {"p1a", 1, "q2"}, {"p9", 9, "q1"}, {"p1b", 1, "q1"}, {"p3", 3, "q2"}, {"other", 1, "q3"},
	} {
		ids[j.name] = b.enqueue(map[string]any{"kind": "k", "priority": j.priority, "queue": j.queue, "args": j.name}).ID
	}
	now := b.clock.Now()
	r := b.do("POST", "/v1/lease", map[string]any{"queues": []string{"q1", "q2"}, "max": 10, "lease_for": "1m", "worker": "w-1"})
	got := decode[jobList](t, r, http.StatusOK).Jobs
	var want []int64
	for _, n := range []string{"p1a", "p1b", "p3", "p5", "p9"} {
		want = append(want, ids[n])
	}
	if !slices.Equal(jobIDs(got), want) {
		t.Fatalf("leased %v, want %v (priority, then scheduled_at, then id)", jobIDs(got), want)
	}
	tokens := map[string]bool{}
	for _, j := range got {
		if j.State != "running" || j.Attempt != 1 || j.AttemptedBy != "w-1" || j.AttemptedAt == nil || !j.AttemptedAt.Equal(now) {
			t.Errorf("leased job = %+v, want running, attempt 1, attempted_by w-1 at %s", j, now)
		}
		if j.LeaseToken == "" || tokens[j.LeaseToken] {
			t.Errorf("job %d lease_token %q: want a token of its own", j.ID, j.LeaseToken)
		}
		tokens[j.LeaseToken] = true
		if j.LeaseExpiry == nil || !j.LeaseExpiry.Equal(now.Add(time.Minute)) {
			t.Errorf("job %d lease_expires_at = %v, want %s", j.ID, j.LeaseExpiry, now.Add(time.Minute))
		}
		if j.Kind != "k" || len(j.Args) == 0 {
			t.Errorf("job %d lacks kind or args: %+v", j.ID, j)
		}
	}
	if left := b.lease(10, "q1", "q2"); len(left) != 0 {
		t.Errorf("a second lease got %v, want nothing left", jobIDs(left))
	}
}

func TestLeaseDefaultsAndMax(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 5 {
		b.enqueue(map[string]any{"kind": "k"})
	}
	now := b.clock.Now()
	one := decode[jobList](t, b.do("POST", "/v1/lease", map[string]any{"queues": []string{"default"}}), http.StatusOK).Jobs
	if len(one) != 1 {
		t.Fatalf("lease without max got %d jobs, want 1", len(one))
	}
	if want := now.Add(engine.DefaultLeaseFor); !one[0].LeaseExpiry.Equal(want) {
		t.Errorf("lease_expires_at = %s, want now + default %s", one[0].LeaseExpiry, want)
	}
	if two := b.lease(2, "default"); len(two) != 2 {
		t.Errorf("max 2 got %d jobs", len(two))
	}
	if rest := b.lease(10, "default"); len(rest) != 2 {
		t.Errorf("max 10 with 2 left got %d jobs", len(rest))
	}
}

func TestLeaseWithNothingAvailable(t *testing.T) {
	t.Parallel()
	t.Run("no wait", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.enqueue(map[string]any{"kind": "k", "queue": "elsewhere"})
		b.enqueue(map[string]any{"kind": "k", "delay": "1m"})
		r := b.do("POST", "/v1/lease", map[string]any{"queues": []string{"default"}})
		wantEmptyJobs(t, r)
	})
	t.Run("wait ends", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		start := time.Now()
		r := b.do("POST", "/v1/lease", map[string]any{"queues": []string{"default"}, "wait": "300ms"})
		wantEmptyJobs(t, r)
		if waited := time.Since(start); waited < 300*time.Millisecond {
			t.Errorf("answered after %s, before the wait of 300ms", waited)
		}
	})
}

// wantEmptyJobs checks that r is 200 {"jobs": []}, an empty array and not
// null.
func wantEmptyJobs(t *testing.T, r *response) {
	t.Helper()
	wantStatus(t, r, http.StatusOK)
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	if got := string(body["jobs"]); got != "[]" {
		t.Errorf(`"jobs" = %s, want []`, got)
	}
}

// leaseResult is the outcome of a lease request sent by leaseAsync.
type leaseResult struct {
	r   *response
	err error
}

// leaseAsync sends a lease request in a goroutine and returns a channel
// for its outcome. It waits until the request has looked once and found
// nothing, so that whatever the test does next happens while it waits.
func leaseAsync(t *testing.T, b *bundle, body map[string]any) <-chan leaseResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), longPollDeadline)
	t.Cleanup(cancel)
	done := make(chan leaseResult, 1)
	go func() {
		r, err := b.send(ctx, "POST", "/v1/lease", "application/json", body)
		done <- leaseResult{r, err}
	}()
	select {
	case <-b.spy.Empty:
	case res := <-done:
		t.Fatalf("lease answered before it had to wait: %v %v", res.r, res.err)
	}
	return done
}

// await receives the response of a lease sent by leaseAsync.
func await(t *testing.T, c <-chan leaseResult) *response {
	t.Helper()
	res := <-c // the request's context ends it by longPollDeadline
	if res.err != nil {
		t.Fatalf("lease: %v", res.err)
	}
	return res.r
}

func TestLeaseLongPoll(t *testing.T) {
	t.Parallel()
	// A poll interval longer than any wait: only the enqueue's wake-up can
	// deliver the job before the wait ends.
	slowPoll := config{engine: engine.Config{PollInterval: time.Hour}}
	t.Run("wakes on enqueue", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, slowPoll)
		c := leaseAsync(t, b, map[string]any{"queues": []string{"other", "default"}, "wait": "10s"})
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		got := decode[jobList](t, await(t, c), http.StatusOK).Jobs
		if len(got) != 1 || got[0].ID != id || got[0].LeaseToken == "" || got[0].State != "running" {
			t.Fatalf("long poll got %+v, want job %d leased", got, id)
		}
	})
	t.Run("wakes on resume", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, slowPoll)
		wantStatus(t, b.do("POST", "/v1/queues/default/pause", nil), http.StatusOK)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		c := leaseAsync(t, b, map[string]any{"queues": []string{"default"}, "wait": "10s"})
		wantStatus(t, b.do("POST", "/v1/queues/default/resume", nil), http.StatusOK)
		got := decode[jobList](t, await(t, c), http.StatusOK).Jobs
		if len(got) != 1 || got[0].ID != id {
			t.Fatalf("long poll got %+v, want job %d once the queue resumed", got, id)
		}
	})
	t.Run("wakes on retry_in 0s", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, slowPoll)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		first := b.leaseOne("default")
		c := leaseAsync(t, b, map[string]any{"queues": []string{"default"}, "wait": "10s"})
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": first.LeaseToken, "error": "x", "retry_in": "0s"})
		wantStatus(t, r, http.StatusOK)
		got := decode[jobList](t, await(t, c), http.StatusOK).Jobs
		if len(got) != 1 || got[0].ID != id || got[0].Attempt != 2 {
			t.Fatalf("long poll got %+v, want job %d at attempt 2", got, id)
		}
	})
}

func TestLeaseSkipsPausedQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	wantStatus(t, b.do("POST", "/v1/queues/q1/pause", nil), http.StatusOK)
	paused := b.enqueue(map[string]any{"kind": "k", "queue": "q1", "priority": 1}).ID
	open := b.enqueue(map[string]any{"kind": "k", "queue": "q2", "priority": 9}).ID
	if got := jobIDs(b.lease(10, "q1", "q2")); !slices.Equal(got, []int64{open}) {
		t.Fatalf("leased %v, want only %d of the unpaused queue", got, open)
	}
	wantEmptyJobs(t, b.do("POST", "/v1/lease", map[string]any{"queues": []string{"q1"}, "wait": "100ms"}))
	wantStatus(t, b.do("POST", "/v1/queues/q1/resume", nil), http.StatusOK)
	if got := jobIDs(b.lease(10, "q1", "q2")); !slices.Equal(got, []int64{paused}) {
		t.Fatalf("after resume leased %v, want %d", got, paused)
	}
}

func TestLeaseRejectsInvalidRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		body     string
		status   int
		location string
	}{
		{"empty queues", `{"queues":[]}`, http.StatusUnprocessableEntity, "body.queues"},
		{"no queues", `{}`, http.StatusUnprocessableEntity, "body"},
		{"bad queue name", `{"queues":["default","a b"]}`, http.StatusUnprocessableEntity, "body.queues[1]"},
		{"max 1001", `{"queues":["default"],"max":1001}`, http.StatusUnprocessableEntity, "body.max"},
		{"negative max", `{"queues":["default"],"max":-1}`, http.StatusUnprocessableEntity, "body.max"},
		{"lease_for below 1s", `{"queues":["default"],"lease_for":"500ms"}`, http.StatusUnprocessableEntity, "body.lease_for"},
		{"lease_for over 24h", `{"queues":["default"],"lease_for":"25h"}`, http.StatusUnprocessableEntity, "body.lease_for"},
		{"negative wait", `{"queues":["default"],"wait":"-1s"}`, http.StatusUnprocessableEntity, "body.wait"},
		{"wait not a duration", `{"queues":["default"],"wait":10}`, http.StatusUnprocessableEntity, "body.wait"},
		{"unknown field", `{"queues":["default"],"queue":"x"}`, http.StatusBadRequest, "body.queue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			id := b.enqueue(map[string]any{"kind": "k"}).ID
			p := wantProblem(t, b.do("POST", "/v1/lease", tc.body), tc.status, "invalid_argument")
			wantLocation(t, p, tc.location)
			if b.get(id).State != "available" {
				t.Error("a refused lease leased the job")
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	t.Run("extends the lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		b.clock.Advance(10 * time.Second)
		type beat struct {
			ID             int64     `json:"id"`
			LeaseExpiresAt time.Time `json:"lease_expires_at"`
		}
		got := decode[beat](t, b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": leased.LeaseToken}), http.StatusOK)
		if want := b.clock.Now().Add(engine.DefaultLeaseFor); got.ID != id || !got.LeaseExpiresAt.Equal(want) {
			t.Errorf("heartbeat = %+v, want job %d until %s", got, id, want)
		}
		if !got.LeaseExpiresAt.After(*leased.LeaseExpiry) {
			t.Errorf("lease_expires_at %s is not after the first %s", got.LeaseExpiresAt, leased.LeaseExpiry)
		}
		got = decode[beat](t, b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": leased.LeaseToken, "lease_for": "5m"}), http.StatusOK)
		if want := b.clock.Now().Add(5 * time.Minute); !got.LeaseExpiresAt.Equal(want) {
			t.Errorf("heartbeat with lease_for 5m: until %s, want %s", got.LeaseExpiresAt, want)
		}
		if stored := b.get(id); !stored.LeaseExpiry.Equal(got.LeaseExpiresAt) {
			t.Errorf("GET lease_expires_at = %s, want %s", stored.LeaseExpiry, got.LeaseExpiresAt)
		}
	})
	t.Run("stale token", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		before := b.get(id)
		b.clock.Advance(10 * time.Second)
		r := b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": "not-" + leased.LeaseToken})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
		if after := b.get(id); !after.LeaseExpiry.Equal(*before.LeaseExpiry) || after.State != "running" {
			t.Errorf("a refused heartbeat changed the job: %+v, was %+v", after, before)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		p := wantProblem(t, b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": leased.LeaseToken, "lease_for": "500ms"}),
			http.StatusUnprocessableEntity, "invalid_argument")
		wantLocation(t, p, "body.lease_for")
		p = wantProblem(t, b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": ""}), http.StatusUnprocessableEntity, "invalid_argument")
		wantLocation(t, p, "body.lease_token")
		wantProblem(t, b.do("POST", jobPath(id, "heartbeat"), `{}`), http.StatusUnprocessableEntity, "invalid_argument")
	})
}

func TestComplete(t *testing.T) {
	t.Parallel()
	t.Run("with output, idempotent", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		b.clock.Advance(time.Second)
		body := `{"lease_token":"` + leased.LeaseToken + `","output":{ "rows": [1, 2] }}`
		got := decode[apiJob](t, b.do("POST", jobPath(id, "complete"), body), http.StatusOK)
		if got.State != "completed" || string(got.Output) != `{"rows":[1,2]}` || got.FinalizedAt == nil || !got.FinalizedAt.Equal(b.clock.Now()) {
			t.Fatalf("complete = %+v, want completed now with the output compacted", got)
		}
		b.clock.Advance(time.Second)
		again := decode[apiJob](t, b.do("POST", jobPath(id, "complete"), body), http.StatusOK)
		if again.ID != id || again.State != "completed" || !again.FinalizedAt.Equal(*got.FinalizedAt) || string(again.Output) != string(got.Output) {
			t.Errorf("repeated complete = %+v, want the first result %+v", again, got)
		}
		other := `{"lease_token":"` + leased.LeaseToken + `","output":"different"}`
		if third := decode[apiJob](t, b.do("POST", jobPath(id, "complete"), other), http.StatusOK); string(third.Output) != string(got.Output) {
			t.Errorf("a repeat with other output changed it to %s", third.Output)
		}
		if stored := b.get(id); string(stored.Output) != `{"rows":[1,2]}` {
			t.Errorf("GET output = %s", stored.Output)
		}
	})
	t.Run("without output", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		got := decode[apiJob](t, b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": leased.LeaseToken}), http.StatusOK)
		if got.State != "completed" {
			t.Errorf("complete = %+v", got)
		}
	})
	t.Run("stale token after another lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		first := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": first.LeaseToken, "error": "x", "retry_in": "0s"})
		wantStatus(t, r, http.StatusOK)
		second := b.leaseOne("default")
		if second.LeaseToken == first.LeaseToken {
			t.Fatal("a new lease reused the token")
		}
		r = b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": first.LeaseToken, "output": "old"})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
		if j := b.get(id); j.State != "running" || j.Output != nil {
			t.Errorf("a stale complete changed the job: %+v", j)
		}
		r = b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": second.LeaseToken})
		wantStatus(t, r, http.StatusOK)
		r = b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": first.LeaseToken})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
	})
	t.Run("stale token after cancel", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		wantStatus(t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusOK)
		r := b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": leased.LeaseToken})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
		if j := b.get(id); j.State != "cancelled" {
			t.Errorf("a stale complete changed the job: %+v", j)
		}
	})
	t.Run("invalid output", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, config{engine: engineConfig(job.Limits{MaxArgsBytes: 150})})
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		tok := leased.LeaseToken
		wantProblem(t, b.do("POST", jobPath(id, "complete"), `{"lease_token":"`+tok+`","output":{bad}}`), http.StatusBadRequest, "invalid_argument")
		deep := strings.Repeat("[", 65) + strings.Repeat("]", 65)
		p := wantProblem(t, b.do("POST", jobPath(id, "complete"), `{"lease_token":"`+tok+`","output":`+deep+`}`), http.StatusUnprocessableEntity, "invalid_argument")
		wantLocation(t, p, "body.output")
		big := map[string]any{"lease_token": tok, "output": strings.Repeat("x", 200)}
		p = wantProblem(t, b.do("POST", jobPath(id, "complete"), big), http.StatusRequestEntityTooLarge, "too_large")
		wantLocation(t, p, "body.output")
		if j := b.get(id); j.State != "running" {
			t.Errorf("a refused complete changed the job: %+v", j)
		}
	})
}

func TestFail(t *testing.T) {
	t.Parallel()
	t.Run("retryable after the backoff", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		now := b.clock.Now()
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "db down", "detail": "dial tcp: refused"})
		got := decode[apiJob](t, r, http.StatusOK)
		if got.State != "retryable" || got.Attempt != 1 || len(got.Errors) != 1 {
			t.Fatalf("fail = %+v, want retryable with one error", got)
		}
		if e := got.Errors[0]; e.Attempt != 1 || e.Message != "db down" || e.Detail != "dial tcp: refused" || !e.At.Equal(now) {
			t.Errorf("errors[0] = %+v", e)
		}
		base := job.BaseBackoff(1)
		if lo, hi := now.Add(base), now.Add(base*13/10+time.Second); got.ScheduledAt.Before(lo) || got.ScheduledAt.After(hi) {
			t.Errorf("scheduled_at = %s, want the backoff from %s to %s", got.ScheduledAt, lo, hi)
		}
		if again := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "db down"}); decode[apiJob](t, again, http.StatusOK).Attempt != 1 {
			t.Error("a repeated fail with the same token did not return the first result")
		}
		if j := b.get(id); len(j.Errors) != 1 {
			t.Errorf("a repeated fail recorded %d errors, want 1", len(j.Errors))
		}
	})
	t.Run("discard", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "bad input", "discard": true})
		got := decode[apiJob](t, r, http.StatusOK)
		if got.State != "discarded" || got.FinalizedAt == nil || len(got.Errors) != 1 {
			t.Errorf("fail with discard = %+v, want discarded with its error", got)
		}
	})
	t.Run("cancel", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		both := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "x", "cancel": true, "discard": true})
		wantLocation(t, wantProblem(t, both, http.StatusUnprocessableEntity, "invalid_argument"), "body.discard")
		if j := b.get(id); j.State != "running" || len(j.Errors) != 0 {
			t.Fatalf("after a refused fail: %+v, want running and unchanged", j)
		}
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "account closed", "cancel": true})
		got := decode[apiJob](t, r, http.StatusOK)
		if got.State != "cancelled" || got.FinalizedAt == nil || len(got.Errors) != 1 || got.Errors[0].Message != "account closed" {
			t.Errorf("fail with cancel = %+v, want cancelled with its error", got)
		}
	})
	t.Run("last attempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k", "max_attempts": 1}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "x"})
		if got := decode[apiJob](t, r, http.StatusOK); got.State != "discarded" {
			t.Errorf("fail of the last attempt = %+v, want discarded", got)
		}
	})
	t.Run("retry_in 0s", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "x", "retry_in": "0s"})
		got := decode[apiJob](t, r, http.StatusOK)
		if got.State != "available" || !got.ScheduledAt.Equal(b.clock.Now()) {
			t.Errorf("fail with retry_in 0s = %+v, want available now", got)
		}
		if again := b.leaseOne("default"); again.ID != id || again.Attempt != 2 {
			t.Errorf("lease after = %+v, want job %d at attempt 2", again, id)
		}
	})
	t.Run("retry_in", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "x", "retry_in": "2m"})
		got := decode[apiJob](t, r, http.StatusOK)
		if want := b.clock.Now().Add(2 * time.Minute); got.State != "retryable" || !got.ScheduledAt.Equal(want) {
			t.Errorf("fail with retry_in 2m = %+v, want retryable at %s", got, want)
		}
	})
	t.Run("stale token", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken + "x", "error": "x"})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
		if j := b.get(id); j.State != "running" || len(j.Errors) != 0 {
			t.Errorf("a stale fail changed the job: %+v", j)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		p := wantProblem(t, b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "x", "retry_in": "-1s"}),
			http.StatusUnprocessableEntity, "invalid_argument")
		wantLocation(t, p, "body.retry_in")
		wantProblem(t, b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken}), http.StatusUnprocessableEntity, "invalid_argument")
		if j := b.get(id); j.State != "running" {
			t.Errorf("a refused fail changed the job: %+v", j)
		}
	})
}

func TestSnooze(t *testing.T) {
	t.Parallel()
	t.Run("does not count the attempt", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "snooze"), map[string]any{"lease_token": leased.LeaseToken, "delay": "1m"})
		got := decode[apiJob](t, r, http.StatusOK)
		if want := b.clock.Now().Add(time.Minute); got.State != "scheduled" || got.Attempt != 0 || !got.ScheduledAt.Equal(want) || len(got.Errors) != 0 {
			t.Fatalf("snooze = %+v, want scheduled at %s, attempt 0, no errors", got, want)
		}
		b.clock.Advance(time.Minute)
		if _, err := b.eng.Promote(t.Context(), 10); err != nil {
			t.Fatal(err)
		}
		if again := b.leaseOne("default"); again.ID != id || again.Attempt != 1 {
			t.Errorf("lease after the snooze = %+v, want job %d at attempt 1", again, id)
		}
	})
	t.Run("zero delay", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "snooze"), map[string]any{"lease_token": leased.LeaseToken, "delay": "0s"})
		if got := decode[apiJob](t, r, http.StatusOK); got.State != "available" {
			t.Errorf("snooze 0s = %+v, want available", got)
		}
	})
	t.Run("missing delay", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		p := wantProblem(t, b.do("POST", jobPath(id, "snooze"), map[string]any{"lease_token": leased.LeaseToken}), http.StatusUnprocessableEntity, "invalid_argument")
		if len(p.Errors) == 0 || !strings.Contains(p.Errors[0].Message, "delay") {
			t.Errorf("errors = %+v, want one naming delay", p.Errors)
		}
		p = wantProblem(t, b.do("POST", jobPath(id, "snooze"), map[string]any{"lease_token": leased.LeaseToken, "delay": "-1s"}), http.StatusUnprocessableEntity, "invalid_argument")
		wantLocation(t, p, "body.delay")
		if j := b.get(id); j.State != "running" {
			t.Errorf("a refused snooze changed the job: %+v", j)
		}
	})
	t.Run("stale token", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		r := b.do("POST", jobPath(id, "snooze"), map[string]any{"lease_token": leased.LeaseToken + "x", "delay": "1m"})
		wantProblem(t, r, http.StatusConflict, "lease_lost")
		if j := b.get(id); j.State != "running" {
			t.Errorf("a stale snooze changed the job: %+v", j)
		}
	})
}

func TestWorkerCallsOnMissingJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for action, body := range settleBodies("some-token") {
		t.Run(action, func(t *testing.T) {
			t.Parallel()
			b := b.withT(t)
			wantProblem(t, b.do("POST", jobPath(4242, action), body), http.StatusNotFound, "not_found")
		})
	}
}
