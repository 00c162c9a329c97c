//go:build linux

package crash

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
)

// listJobs reads every job through GET /v1/jobs, page by page, retrying
// pages that meet a transient error.
func listJobs(ctx context.Context, c *client) ([]httpapi.Job, error) {
	var all []httpapi.Job
	cursor := ""
	for {
		q := url.Values{"limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		status, data, err := c.do(ctx, http.MethodGet, "/v1/jobs?"+q.Encode(), nil, nil)
		if transient(status, err) {
			if !pause(ctx, retryPause) {
				return nil, fmt.Errorf("list jobs: %w (last: status %d, %w)", ctx.Err(), status, err)
			}
			continue
		}
		if status != http.StatusOK {
			return nil, fmt.Errorf("list jobs: status %d: %s", status, data)
		}
		var page struct {
			Jobs       []httpapi.Job `json:"jobs"`
			NextCursor string        `json:"next_cursor"`
		}
		if err := json.Unmarshal(data, &page); err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		all = append(all, page.Jobs...)
		if page.NextCursor == "" {
			return all, nil
		}
		cursor = page.NextCursor
	}
}

// unfinished returns how many jobs are not in a final state, from the
// queues' counts.
func unfinished(ctx context.Context, c *client) (int, error) {
	status, data, err := c.do(ctx, http.MethodGet, "/v1/queues", nil, nil)
	if err != nil {
		return 0, err
	}
	if status != http.StatusOK {
		return 0, fmt.Errorf("GET /v1/queues: status %d: %s", status, data)
	}
	var out struct {
		Queues []httpapi.Queue `json:"queues"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return 0, err
	}
	n := 0
	for _, q := range out.Queues {
		for st, c := range q.Counts {
			if !isFinal(st) {
				n += c
			}
		}
	}
	return n, nil
}

func isFinal(state string) bool {
	return state == "completed" || state == "discarded" || state == "cancelled"
}

// result sums up what one iteration checked.
type result struct {
	kills, pgStops    int
	jobs              int // jobs listed after the drain
	planned           int // jobs the producers meant to enqueue
	acked, unknown    int // acknowledged jobs; jobs of requests with a hidden outcome
	unknownStored     int // of those, the ones the server had stored
	keyedRetried      int
	replays           int
	grants            int
	completes, fails  int // acknowledged (2xx) settles
	leaseLost         int // settles refused with 409 lease_lost (probes aside)
	probes            int // settles with a stale token, all refused
	rescued           int // attempts taken back after their lease expired
	completed, discrd int // final states
	violations        []string
	finalKills        int           // the kill -9 after the drain
	took              time.Duration // the iteration's wall time
	drain             time.Duration // from the end of the faults and the production to no job left
	note              string        // what the end of the iteration kept or failed to clean
}

// check compares the ledger with the jobs listed after the drain (final)
// and after one more kill -9 and restart (again), and returns the
// violations of the invariants.
func check(p *plan, l *ledger, final, again []httpapi.Job) *result {
	r := &result{jobs: len(final), keyedRetried: l.KeyedRetried, replays: l.Replays, grants: len(l.Grants)}
	v := func(format string, args ...any) { r.violations = append(r.violations, fmt.Sprintf(format, args...)) }
	r.violations = append(r.violations, l.Problems...)

	planned := map[string]bool{}
	for _, reqs := range p.producers {
		for _, rq := range reqs {
			for _, tag := range rq.tags {
				planned[tag] = true
			}
		}
	}
	byID := map[int64]*httpapi.Job{}
	byTag := map[string][]int64{}
	for i := range final {
		j := &final[i]
		byID[j.ID] = j
		tag := tagOf(j.Args)
		byTag[tag] = append(byTag[tag], j.ID)
	}

	// No acknowledged enqueue is missing.
	r.acked = len(l.Acked)
	for _, tag := range sortedKeys(l.Acked) {
		id := l.Acked[tag]
		j, ok := byID[id]
		switch {
		case !ok:
			v("acknowledged enqueue %s (job %d) is missing", tag, id)
		case tagOf(j.Args) != tag:
			v("enqueue %s was acknowledged as job %d, but job %d holds %s", tag, id, id, tagOf(j.Args))
		}
	}
	// No enqueue stored twice; no job from a request that was refused.
	for _, tag := range sortedKeys(byTag) {
		ids := byTag[tag]
		_, acked := l.Acked[tag]
		switch {
		case !planned[tag]:
			v("jobs %v hold tag %q, which no producer sent", ids, tag)
		case len(ids) > 1 && l.Keyed[tag] != "":
			v("enqueue %s with Idempotency-Key %q stored %d times: jobs %v", tag, l.Keyed[tag], len(ids), ids)
		case len(ids) > 1:
			v("enqueue %s stored %d times: jobs %v", tag, len(ids), ids)
		case !acked && !l.Unknown[tag]:
			v("job %d (%s) exists, but its enqueue was refused or never sent", ids[0], tag)
		}
	}
	r.planned, r.unknown = len(planned), len(l.Unknown)
	for tag := range l.Unknown {
		if _, ok := byTag[tag]; ok {
			r.unknownStored++
		}
	}

	grants := map[int64][]*grant{}
	for _, g := range l.Grants {
		grants[g.JobID] = append(grants[g.JobID], g)
	}
	completes := map[int64][]settle{} // 2xx completions
	for _, s := range l.Settles {
		switch {
		case strings.HasPrefix(s.Op, "stale-"):
			r.probes++
			if s.Status != http.StatusConflict {
				v("%s of job %d with the token of attempt %d, while a later attempt ran, answered %d; want 409 lease_lost", s.Op, s.JobID, s.Attempt, s.Status)
			}
		case s.Status == http.StatusOK && s.Op == "complete":
			r.completes++
			completes[s.JobID] = append(completes[s.JobID], s)
		case s.Status == http.StatusOK:
			r.fails++
		case s.Status == http.StatusConflict:
			r.leaseLost++
		}
	}

	for i := range final {
		checkJob(&final[i], grants[final[i].ID], completes[final[i].ID], l, r, v)
	}
	for _, s := range l.Settles {
		if s.Status != http.StatusOK || s.Op != "fail" && s.Op != "discard" {
			continue
		}
		j := byID[s.JobID]
		if j == nil {
			v("job %d, failed with a 2xx reply, is missing", s.JobID)
			continue
		}
		e := errorAt(j, s.Attempt)
		if e == nil || !strings.Contains(e.Message, s.Token) {
			v("the acknowledged %s of job %d attempt %d is not in its history %s", s.Op, s.JobID, s.Attempt, errorsString(j))
		}
		if s.Op == "discard" && j.State != "discarded" {
			v("job %d was acknowledged discarded, but is %s", s.JobID, j.State)
		}
	}
	for _, g := range l.Grants {
		if byID[g.JobID] == nil {
			v("job %d, leased to %s, is missing", g.JobID, g.Worker)
		}
	}

	// Finished is final, also across one more kill -9.
	if len(again) != len(final) {
		v("%d jobs after the drain, %d after one more kill -9 and restart", len(final), len(again))
	}
	for i := range again {
		a := &again[i]
		j := byID[a.ID]
		if j == nil {
			v("job %d appeared after the last kill -9", a.ID)
			continue
		}
		if a.State != j.State || a.Attempt != j.Attempt || !jsonEqual(a.Output, j.Output) || len(a.Errors) != len(j.Errors) {
			v("job %d changed across the last kill -9: %s attempt %d output %s errors %d, then %s attempt %d output %s errors %d",
				a.ID, j.State, j.Attempt, j.Output, len(j.Errors), a.State, a.Attempt, a.Output, len(a.Errors))
		}
	}
	return r
}

// checkJob checks one job against the grants and the 2xx completions the
// workers received for it.
func checkJob(j *httpapi.Job, gs []*grant, completes []settle, l *ledger, r *result, v func(string, ...any)) {
	switch j.State {
	case "completed":
		r.completed++
	case "discarded":
		r.discrd++
	case "cancelled":
		v("job %d is cancelled, but nobody cancels jobs here", j.ID)
	default:
		v("job %d is still %s after the drain", j.ID, j.State)
	}
	if j.Attempt > j.MaxAttempts {
		v("job %d is at attempt %d of max_attempts %d", j.ID, j.Attempt, j.MaxAttempts)
	}

	// The history: one entry per failed attempt, in order, none for an
	// attempt that did not start.
	prev := 0
	for _, e := range j.Errors {
		if e.Attempt <= prev || e.Attempt > j.Attempt {
			v("job %d at attempt %d has a history out of order: %s", j.ID, j.Attempt, errorsString(j))
			break
		}
		prev = e.Attempt
		if e.Message == outcomeRescued {
			r.rescued++
		}
	}
	switch j.State {
	case "completed":
		if errorAt(j, j.Attempt) != nil {
			v("job %d completed at attempt %d, which its history records as failed: %s", j.ID, j.Attempt, errorsString(j))
		}
	case "discarded":
		last := errorAt(j, j.Attempt)
		switch {
		case last == nil:
			v("job %d discarded at attempt %d without a failure of that attempt: %s", j.ID, j.Attempt, errorsString(j))
		case j.Attempt < j.MaxAttempts && !strings.HasPrefix(last.Message, "crash harness: discard"):
			v("job %d discarded at attempt %d of %d without a discard: %s", j.ID, j.Attempt, j.MaxAttempts, errorsString(j))
		}
	}

	// Leases: each attempt granted once, never past max_attempts, never
	// lost.
	byAttempt := map[int]*grant{}
	for _, g := range gs {
		if o := byAttempt[g.Attempt]; o != nil {
			v("attempt %d of job %d was leased twice (to %s and %s): an acknowledged lease was lost", g.Attempt, j.ID, o.Worker, g.Worker)
		}
		byAttempt[g.Attempt] = g
		if g.Attempt > g.MaxAttempts || g.MaxAttempts != j.MaxAttempts {
			v("job %d leased for attempt %d of %d (max_attempts %d)", j.ID, g.Attempt, g.MaxAttempts, j.MaxAttempts)
		}
		if g.Attempt > j.Attempt {
			v("job %d is at attempt %d, but attempt %d was leased: the lease was lost", j.ID, j.Attempt, g.Attempt)
		}
	}

	// A second execution only after the first failed or its lease ran
	// out: each attempt that was followed by another has its failure in
	// the history (the worker's own, or the rescuer's once the lease had
	// expired), and the next lease reached its worker only after that
	// worker's fail was sent, or after the lease expired. (The server's
	// own timestamps are taken as each request arrives, so two concurrent
	// requests may carry them in either order: the order checked here is
	// the one the harness saw.)
	for _, g := range gs {
		if g.Attempt >= j.Attempt {
			continue
		}
		e := errorAt(j, g.Attempt)
		if e == nil {
			v("attempt %d of job %d was followed by attempt %d, yet its history has no failure for it: %s", g.Attempt, j.ID, j.Attempt, errorsString(j))
			continue
		}
		next := byAttempt[g.Attempt+1]
		switch {
		case e.Message == outcomeRescued:
			if !e.At.After(g.ExpiresAt) {
				v("attempt %d of job %d was taken back at %s, before its lease ran out at %s", g.Attempt, j.ID, e.At.Format(time.RFC3339Nano), g.ExpiresAt.Format(time.RFC3339Nano))
			}
			if next != nil && !next.ReceivedAt.After(g.ExpiresAt) {
				v("attempt %d of job %d was leased at %s, while attempt %d's lease ran until %s and it had not failed", next.Attempt, j.ID, next.ReceivedAt.Format(time.RFC3339Nano), g.Attempt, g.ExpiresAt.Format(time.RFC3339Nano))
			}
		case strings.Contains(e.Message, g.Token):
			if g.FailSentAt.IsZero() {
				v("attempt %d of job %d has a failure with its token in its history, but its worker never sent one: %s", g.Attempt, j.ID, errorsString(j))
			} else if next != nil && next.ReceivedAt.Before(g.FailSentAt) {
				v("attempt %d of job %d was leased before attempt %d's worker sent its fail, while its lease ran until %s", next.Attempt, j.ID, g.Attempt, g.ExpiresAt.Format(time.RFC3339Nano))
			}
		default:
			v("attempt %d of job %d ended with a failure that is neither its worker's nor a lease expiry: %q", g.Attempt, j.ID, e.Message)
		}
	}

	// Completions: only by the live token, once.
	tokens := map[string]bool{}
	for _, s := range completes {
		tokens[s.Token] = true
	}
	if len(tokens) > 1 {
		v("job %d was completed with %d different tokens: %v", j.ID, len(tokens), slices.Sorted(maps.Keys(tokens)))
	}
	if j.State != "completed" {
		if len(completes) > 0 {
			v("job %d was acknowledged completed (attempt %d), but is %s", j.ID, completes[0].Attempt, j.State)
		}
		return
	}
	var out struct {
		Token   string `json:"token"`
		Attempt int    `json:"attempt"`
	}
	if err := json.Unmarshal(j.Output, &out); err != nil || out.Token == "" {
		v("job %d completed with output %s, not a harness worker's", j.ID, j.Output)
		return
	}
	l.mu.Lock()
	g := l.byToken[out.Token]
	l.mu.Unlock()
	switch {
	case g == nil || g.JobID != j.ID:
		v("job %d completed with token %s, which no worker held for it", j.ID, out.Token)
	case g.Attempt != j.Attempt:
		v("job %d at attempt %d completed with the token of attempt %d: a stale token", j.ID, j.Attempt, g.Attempt)
	}
	for tok := range tokens {
		if tok != out.Token {
			v("job %d: the complete with token %s was acknowledged, but the job holds the output of token %s", j.ID, tok, out.Token)
		}
	}
}

// errorAt returns j's history entry of attempt a, or nil.
func errorAt(j *httpapi.Job, a int) *httpapi.AttemptError {
	for i := range j.Errors {
		if j.Errors[i].Attempt == a {
			return &j.Errors[i]
		}
	}
	return nil
}

func errorsString(j *httpapi.Job) string {
	var b strings.Builder
	b.WriteString("[")
	for i, e := range j.Errors {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "attempt %d at %s: %s", e.Attempt, e.At.Format(time.RFC3339Nano), e.Message)
	}
	b.WriteString("]")
	return b.String()
}

func jsonEqual(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
