//go:build linux

package crash

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
)

// checkCase is a consistent iteration in miniature: two acknowledged jobs,
// the first failed once and completed by its second attempt, the second
// taken back after its lease ran out and then discarded. Each test case
// breaks one thing.
type checkCase struct {
	p     *plan
	l     *ledger
	final []httpapi.Job
	again []httpapi.Job
}

func newCheckCase() *checkCase {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ptr := func(t time.Time) *time.Time { return &t }
	p := &plan{producers: [][]request{{
		{name: "p0-r0", key: "k0", tags: []string{"p0-r0-i0"}},
		{name: "p0-r1", tags: []string{"p0-r1-i0"}},
		{name: "p0-r2", tags: []string{"p0-r2-i0"}},
	}}}
	l := newLedger()
	l.Acked["p0-r0-i0"] = 1
	l.Keyed["p0-r0-i0"] = "k0"
	l.Acked["p0-r1-i0"] = 2
	l.Unknown["p0-r2-i0"] = true // its reply was cut off; it may exist or not
	grants := []*grant{
		{JobID: 1, Tag: "p0-r0-i0", Token: "t1", Attempt: 1, MaxAttempts: 3, AttemptedAt: at(0), ExpiresAt: at(1000), Worker: "w0", ReceivedAt: at(1), FailSentAt: at(5)},
		{JobID: 1, Tag: "p0-r0-i0", Token: "t2", Attempt: 2, MaxAttempts: 3, AttemptedAt: at(20), ExpiresAt: at(1020), Worker: "w1", ReceivedAt: at(21)},
		{JobID: 2, Tag: "p0-r1-i0", Token: "u1", Attempt: 1, MaxAttempts: 2, AttemptedAt: at(0), ExpiresAt: at(1000), Worker: "w0", ReceivedAt: at(1)},
		{JobID: 2, Tag: "p0-r1-i0", Token: "u2", Attempt: 2, MaxAttempts: 2, AttemptedAt: at(1600), ExpiresAt: at(2600), Worker: "w1", ReceivedAt: at(1601), FailSentAt: at(1650)},
	}
	for _, g := range grants {
		l.Grants = append(l.Grants, g)
		l.byToken[g.Token] = g
	}
	l.Settles = []settle{
		{JobID: 1, Token: "t1", Attempt: 1, Op: "fail", Status: http.StatusOK, State: "available"},
		{JobID: 1, Token: "t2", Attempt: 2, Op: "complete", Status: http.StatusOK, State: "completed"},
		{JobID: 2, Token: "u1", Attempt: 1, Op: "complete", Status: http.StatusConflict}, // too late
		{JobID: 2, Token: "u2", Attempt: 2, Op: "discard", Status: http.StatusOK, State: "discarded"},
	}
	final := []httpapi.Job{
		{
			ID: 1, Args: json.RawMessage(`{"tag":"p0-r0-i0"}`), State: "completed", Attempt: 2, MaxAttempts: 3,
			Output:      json.RawMessage(`{"token":"t2","attempt":2}`),
			Errors:      []httpapi.AttemptError{{Attempt: 1, At: at(10), Message: "crash harness: fail attempt 1 token t1"}},
			AttemptedAt: ptr(at(20)),
		},
		{
			ID: 2, Args: json.RawMessage(`{"tag":"p0-r1-i0"}`), State: "discarded", Attempt: 2, MaxAttempts: 2,
			Errors: []httpapi.AttemptError{
				{Attempt: 1, At: at(1500), Message: outcomeRescued},
				{Attempt: 2, At: at(1700), Message: "crash harness: discard attempt 2 token u2"},
			},
			AttemptedAt: ptr(at(1600)),
		},
	}
	return &checkCase{p: p, l: l, final: final, again: cloneJobs(final)}
}

func cloneJobs(js []httpapi.Job) []httpapi.Job {
	out := make([]httpapi.Job, len(js))
	for i, j := range js {
		j.Errors = slices.Clone(j.Errors)
		out[i] = j
	}
	return out
}

func TestCheckAcceptsAConsistentRun(t *testing.T) {
	t.Parallel()
	c := newCheckCase()
	r := check(c.p, c.l, c.final, c.again)
	if len(r.violations) != 0 {
		t.Fatalf("violations in a consistent run:\n%s", strings.Join(r.violations, "\n"))
	}
	if r.acked != 2 || r.completes != 1 || r.fails != 2 || r.leaseLost != 1 || r.rescued != 1 || r.completed != 1 || r.discrd != 1 {
		t.Errorf("counts %+v", *r)
	}
}

func TestCheckFindsViolations(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(c *checkCase)
		want   string
	}{
		{"acknowledged enqueue missing", func(c *checkCase) {
			c.final, c.again = c.final[1:], c.again[1:]
			c.l.Grants, c.l.Settles = c.l.Grants[2:], c.l.Settles[2:]
		}, "acknowledged enqueue p0-r0-i0 (job 1) is missing"},
		{"keyed enqueue stored twice", func(c *checkCase) {
			dup := c.final[1]
			dup.ID, dup.Args, dup.Errors = 3, json.RawMessage(`{"tag":"p0-r0-i0"}`), nil
			dup.State, dup.Attempt = "discarded", 0
			c.final = append(c.final, dup)
			c.again = cloneJobs(c.final)
		}, `with Idempotency-Key "k0" stored 2 times`},
		{"job of a refused request", func(c *checkCase) {
			delete(c.l.Unknown, "p0-r2-i0")
			j := httpapi.Job{ID: 3, Args: json.RawMessage(`{"tag":"p0-r2-i0"}`), State: "completed", Attempt: 1, MaxAttempts: 2,
				Output: json.RawMessage(`{"token":"v1","attempt":1}`)}
			g := &grant{JobID: 3, Tag: "p0-r2-i0", Token: "v1", Attempt: 1, MaxAttempts: 2}
			c.l.Grants = append(c.l.Grants, g)
			c.l.byToken["v1"] = g
			c.final = append(c.final, j)
			c.again = cloneJobs(c.final)
		}, "its enqueue was refused or never sent"},
		{"job left unfinished", func(c *checkCase) {
			c.final[0].State, c.again[0].State = "running", "running"
		}, "job 1 is still running after the drain"},
		{"attempts past max_attempts", func(c *checkCase) {
			c.final[1].MaxAttempts, c.again[1].MaxAttempts = 1, 1
		}, "job 2 is at attempt 2 of max_attempts 1"},
		{"completed by a stale token", func(c *checkCase) {
			c.final[0].Output = json.RawMessage(`{"token":"t1","attempt":1}`)
			c.again[0].Output = c.final[0].Output
		}, "completed with the token of attempt 1: a stale token"},
		{"completed by two tokens", func(c *checkCase) {
			c.l.Settles = append(c.l.Settles, settle{JobID: 1, Token: "t1", Attempt: 1, Op: "complete", Status: http.StatusOK})
		}, "completed with 2 different tokens"},
		{"acknowledged completion lost", func(c *checkCase) {
			c.l.Settles = append(c.l.Settles, settle{JobID: 2, Token: "u2", Attempt: 2, Op: "complete", Status: http.StatusOK})
		}, "job 2 was acknowledged completed (attempt 2), but is discarded"},
		{"acknowledged failure lost", func(c *checkCase) {
			c.final[0].Errors, c.again[0].Errors = nil, nil
		}, "the acknowledged fail of job 1 attempt 1 is not in its history"},
		{"lease taken back before it expired", func(c *checkCase) {
			c.final[1].Errors[0].At = c.l.Grants[2].ExpiresAt.Add(-time.Millisecond)
			c.again = cloneJobs(c.final)
		}, "attempt 1 of job 2 was taken back at"},
		{"second execution while the first lease lived", func(c *checkCase) {
			c.l.Grants[3].ReceivedAt = c.l.Grants[2].ExpiresAt.Add(-time.Millisecond)
		}, "attempt 2 of job 2 was leased at"},
		{"second execution before the first failed", func(c *checkCase) {
			c.l.Grants[1].ReceivedAt = c.l.Grants[0].FailSentAt.Add(-time.Millisecond)
		}, "attempt 2 of job 1 was leased before attempt 1's worker sent its fail"},
		{"failure in the history that nobody sent", func(c *checkCase) {
			c.l.Grants[0].FailSentAt = time.Time{}
		}, "its worker never sent one"},
		{"attempt leased twice", func(c *checkCase) {
			g := *c.l.Grants[1]
			g.Token, g.Worker = "t2b", "w2"
			c.l.Grants = append(c.l.Grants, &g)
			c.l.byToken["t2b"] = &g
		}, "attempt 2 of job 1 was leased twice"},
		{"acknowledged lease lost", func(c *checkCase) {
			g := &grant{JobID: 1, Tag: "p0-r0-i0", Token: "t3", Attempt: 3, MaxAttempts: 3, Worker: "w2"}
			c.l.Grants = append(c.l.Grants, g)
			c.l.byToken["t3"] = g
		}, "job 1 is at attempt 2, but attempt 3 was leased"},
		{"finished job changed by the last kill", func(c *checkCase) {
			c.again[0].State = "available"
		}, "job 1 changed across the last kill -9"},
		{"stale token accepted", func(c *checkCase) {
			c.l.Settles = append(c.l.Settles, settle{JobID: 1, Token: "t1", Attempt: 1, Op: "stale-complete", Status: http.StatusOK})
		}, "stale-complete of job 1 with the token of attempt 1, while a later attempt ran, answered 200"},
		{"problem seen while running", func(c *checkCase) {
			c.l.problem("request p0-r0 repeated with its Idempotency-Key got other jobs")
		}, "repeated with its Idempotency-Key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCheckCase()
			tt.mutate(c)
			r := check(c.p, c.l, c.final, c.again)
			for _, v := range r.violations {
				if strings.Contains(v, tt.want) {
					return
				}
			}
			t.Errorf("no violation mentions %q; got:\n%s", tt.want, strings.Join(r.violations, "\n"))
		})
	}
}
