package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
)

func TestEnqueueAppliesDefaultsAndCompactsArgs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do("POST", "/v1/jobs", `{"kind": "email.send", "args": {"to": "a@example.com",  "n": [1, 2]}}`)
	got := decode[apiJob](t, r, http.StatusCreated)
	now := b.clock.Now()
	if got.ID <= 0 || got.Kind != "email.send" || got.Queue != "default" || got.Priority != 5 ||
		got.MaxAttempts != 25 || got.State != "available" || got.Attempt != 0 || got.Duplicate {
		t.Errorf("job = %+v, want the defaults (queue default, priority 5, max_attempts 25, available)", got)
	}
	if want := `{"to":"a@example.com","n":[1,2]}`; string(got.Args) != want {
		t.Errorf("args = %s, want %s (compacted, key order kept)", got.Args, want)
	}
	if !got.CreatedAt.Equal(now) || !got.ScheduledAt.Equal(now) {
		t.Errorf("created_at, scheduled_at = %s, %s, want both %s", got.CreatedAt, got.ScheduledAt, now)
	}
	if got.LeaseToken != "" || got.AttemptedAt != nil || got.FinalizedAt != nil {
		t.Errorf("a new job has lease_token %q, attempted_at %v, finalized_at %v; want none", got.LeaseToken, got.AttemptedAt, got.FinalizedAt)
	}
	if stored := b.get(got.ID); stored.ID != got.ID || string(stored.Args) != string(got.Args) {
		t.Errorf("GET = %+v, want the enqueued job", stored)
	}
}

func TestEnqueueWithoutArgsStoresNull(t *testing.T) {
	t.Parallel()
	b := setup(t)
	got := b.enqueue(map[string]any{"kind": "k"})
	if string(got.Args) != "null" {
		t.Errorf("args = %s, want null", got.Args)
	}
}

func TestEnqueueWithEveryField(t *testing.T) {
	t.Parallel()
	b := setup(t)
	dep := b.enqueue(map[string]any{"kind": "first"})
	now := b.clock.Now()

	delayed := b.enqueue(map[string]any{
		"kind": "report", "queue": "reports", "priority": 2, "max_attempts": 3,
		"delay": "90s", "timeout": "1m30s", "tags": []string{"nightly", "team:data"},
		"metadata": json.RawMessage(`{ "owner" : "ops" }`),
	})
	if delayed.Queue != "reports" || delayed.Priority != 2 || delayed.MaxAttempts != 3 ||
		delayed.State != "scheduled" || delayed.Timeout != "1m30s" ||
		!slices.Equal(delayed.Tags, []string{"nightly", "team:data"}) || string(delayed.Metadata) != `{"owner":"ops"}` {
		t.Errorf("job = %+v, want every field as given (state scheduled)", delayed)
	}
	if want := now.Add(90 * time.Second); !delayed.ScheduledAt.Equal(want) {
		t.Errorf("scheduled_at = %s, want now + delay = %s", delayed.ScheduledAt, want)
	}

	at := now.Add(time.Hour)
	runAt := b.enqueue(map[string]any{"kind": "report", "run_at": at.Format(time.RFC3339Nano)})
	if runAt.State != "scheduled" || !runAt.ScheduledAt.Equal(at) {
		t.Errorf("run_at job: state %s scheduled_at %s, want scheduled at %s", runAt.State, runAt.ScheduledAt, at)
	}

	dependant := b.enqueue(map[string]any{"kind": "second", "depends_on": []int64{dep.ID}})
	if dependant.State != "pending" || !slices.Equal(dependant.DependsOn, []int64{dep.ID}) {
		t.Errorf("dependant: state %s depends_on %v, want pending on [%d]", dependant.State, dependant.DependsOn, dep.ID)
	}
}

func TestEnqueueAcceptsJSONWithCharset(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.doCT("POST", "/v1/jobs", "application/json; charset=utf-8", `{"kind":"k"}`)
	decode[apiJob](t, r, http.StatusCreated)
}

func TestEnqueueDuplicateOfUniqueJob(t *testing.T) {
	t.Parallel()
	t.Run("explicit key", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(map[string]any{"kind": "sync", "args": 1, "unique": map[string]any{"key": "acct-7"}})
		r := b.do("POST", "/v1/jobs", map[string]any{"kind": "sync", "args": 2, "unique": map[string]any{"key": "acct-7"}})
		dup := decode[apiJob](t, r, http.StatusOK)
		if !dup.Duplicate || dup.ID != first.ID || string(dup.Args) != "1" {
			t.Errorf("duplicate = %+v, want the first job (id %d, args 1) with duplicate: true", dup, first.ID)
		}
		if first.Duplicate {
			t.Error("the first enqueue says duplicate: true")
		}
		other := b.enqueue(map[string]any{"kind": "sync", "unique": map[string]any{"key": "acct-8"}})
		if other.ID == first.ID {
			t.Error("another key got the same job")
		}
		wantJobCount(t, b, "", 2)
	})
	t.Run("by args", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		first := b.enqueue(map[string]any{"kind": "sync", "args": json.RawMessage(`{"a":1,"b":2}`), "unique": map[string]any{"by_args": true}})
		r := b.do("POST", "/v1/jobs", `{"kind":"sync","args":{ "b": 2, "a": 1 },"unique":{"by_args":true}}`)
		dup := decode[apiJob](t, r, http.StatusOK)
		if !dup.Duplicate || dup.ID != first.ID {
			t.Errorf("duplicate = %+v, want job %d with duplicate: true (same args, other key order)", dup, first.ID)
		}
		b.enqueue(map[string]any{"kind": "sync", "args": json.RawMessage(`{"a":1,"b":3}`), "unique": map[string]any{"by_args": true}})
		wantJobCount(t, b, "", 2)
	})
}

func TestEnqueueRejectsInvalidJob(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		body     string
		location string
	}{
		{"kind with a space", `{"kind":"send email"}`, "body.kind"},
		{"kind with a slash", `{"kind":"a/b"}`, "body.kind"},
		{"empty kind", `{"kind":""}`, "body.kind"},
		{"missing kind", `{"args":1}`, "body"}, // huma names the object that lacks a property
		{"kind too long", `{"kind":"` + strings.Repeat("k", 129) + `"}`, "body.kind"},
		{"queue with a space", `{"kind":"k","queue":"a b"}`, "body.queue"},
		{"priority 10", `{"kind":"k","priority":10}`, "body.priority"},
		{"priority -1", `{"kind":"k","priority":-1}`, "body.priority"},
		{"priority not a number", `{"kind":"k","priority":"high"}`, "body.priority"},
		{"max_attempts -1", `{"kind":"k","max_attempts":-1}`, "body.max_attempts"},
		{"run_at and delay", `{"kind":"k","run_at":"2031-01-01T00:00:00Z","delay":"1m"}`, "body.run_at"},
		{"negative delay", `{"kind":"k","delay":"-5s"}`, "body.delay"},
		{"negative timeout", `{"kind":"k","timeout":"-5s"}`, "body.timeout"},
		{"metadata an array", `{"kind":"k","metadata":[1,2]}`, "body.metadata"},
		{"metadata a string", `{"kind":"k","metadata":"owner"}`, "body.metadata"},
		{"unique key and by_args", `{"kind":"k","unique":{"key":"x","by_args":true}}`, "body.unique"},
		{"unique negative period", `{"kind":"k","unique":{"key":"x","period":"-1h"}}`, "body.unique.period"},
		{"tag with a space", `{"kind":"k","tags":["ok","not ok"]}`, "body.tags[1]"},
		{"dependency id 0", `{"kind":"k","depends_on":[0]}`, "body.depends_on[0]"},
		{"args too deep", `{"kind":"k","args":` + strings.Repeat("[", 65) + strings.Repeat("]", 65) + `}`, "body.args"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			p := wantProblem(t, b.do("POST", "/v1/jobs", tc.body), http.StatusUnprocessableEntity, "invalid_argument")
			wantLocation(t, p, tc.location)
			wantJobCount(t, b, "", 0)
		})
	}
}

func TestEnqueueRejectsMalformedRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		contentType string
		body        string
		status      int
		location    string
	}{
		{"truncated JSON", "application/json", `{"kind":"k",`, http.StatusBadRequest, "body"},
		{"not JSON", "application/json", `kind=k`, http.StatusBadRequest, "body"},
		{"trailing garbage", "application/json", `{"kind":"k"} x`, http.StatusBadRequest, "body"},
		{"unknown field", "application/json", `{"kind":"k","prio":1}`, http.StatusBadRequest, "body.prio"},
		{"unknown field in unique", "application/json", `{"kind":"k","unique":{"keys":"x"}}`, http.StatusBadRequest, "body.unique.keys"},
		{"text/plain", "text/plain", `{"kind":"k"}`, http.StatusUnsupportedMediaType, ""},
		{"form", "application/x-www-form-urlencoded", `kind=k`, http.StatusUnsupportedMediaType, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			p := wantProblem(t, b.doCT("POST", "/v1/jobs", tc.contentType, tc.body), tc.status, "invalid_argument")
			if tc.location != "" {
				wantLocation(t, p, tc.location)
			}
			wantJobCount(t, b, "", 0)
		})
	}
}

func TestEnqueueTooLarge(t *testing.T) {
	t.Parallel()
	t.Run("body over the API's limit", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, config{api: httpapi.Options{MaxBodyBytes: 512}})
		b.enqueue(map[string]any{"kind": "k", "args": strings.Repeat("x", 400)})
		r := b.do("POST", "/v1/jobs", map[string]any{"kind": "k", "args": strings.Repeat("x", 600)})
		wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
		r = b.do("POST", "/v1/jobs/batch", map[string]any{"jobs": []any{map[string]any{"kind": "k", "args": strings.Repeat("x", 600)}}})
		wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
		wantJobCount(t, b, "", 1)
	})
	t.Run("default body limit follows MaxArgsBytes", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, config{
			engine: engineConfig(job.Limits{MaxArgsBytes: 1024}),
			api:    httpapi.Options{MaxArgsBytes: 1024},
		})
		// The body limit is the args limit plus 64 KiB.
		r := b.do("POST", "/v1/jobs", map[string]any{"kind": "k", "args": strings.Repeat("x", 70<<10)})
		wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
		wantJobCount(t, b, "", 0)
	})
	t.Run("args over the engine's limit", func(t *testing.T) {
		t.Parallel()
		b := setupWith(t, config{engine: engineConfig(job.Limits{MaxArgsBytes: 100})})
		b.enqueue(map[string]any{"kind": "k", "args": strings.Repeat("x", 90)})
		r := b.do("POST", "/v1/jobs", map[string]any{"kind": "k", "args": strings.Repeat("x", 200)})
		p := wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
		wantLocation(t, p, "body.args")
		r = b.do("POST", "/v1/jobs/batch", map[string]any{"jobs": []any{
			map[string]any{"kind": "k"}, map[string]any{"kind": "k", "args": strings.Repeat("x", 200)},
		}})
		p = wantProblem(t, r, http.StatusRequestEntityTooLarge, "too_large")
		wantLocation(t, p, "body.jobs[1].args")
		wantJobCount(t, b, "", 1)
	})
}

func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	t.Run("all jobs in order", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		held := b.enqueue(map[string]any{"kind": "u", "unique": map[string]any{"key": "one"}})
		var in []map[string]any
		for i := range 5 {
			in = append(in, map[string]any{"kind": "k" + strconv.Itoa(i), "args": i, "priority": i + 1})
		}
		in = append(in, map[string]any{"kind": "u", "unique": map[string]any{"key": "one"}})
		r := b.do("POST", "/v1/jobs/batch", map[string]any{"jobs": in})
		got := decode[jobList](t, r, http.StatusCreated).Jobs
		if len(got) != 6 {
			t.Fatalf("got %d jobs, want 6", len(got))
		}
		for i, j := range got[:5] {
			if j.Kind != "k"+strconv.Itoa(i) || string(j.Args) != strconv.Itoa(i) || j.Priority != i+1 || j.State != "available" || j.Duplicate {
				t.Errorf("jobs[%d] = %+v, want kind k%d, args %d, priority %d", i, j, i, i, i+1)
			}
			if i > 0 && j.ID <= got[i-1].ID {
				t.Errorf("jobs[%d].id = %d, not after jobs[%d].id = %d", i, j.ID, i-1, got[i-1].ID)
			}
		}
		if last := got[5]; !last.Duplicate || last.ID != held.ID {
			t.Errorf("jobs[5] = %+v, want job %d with duplicate: true", last, held.ID)
		}
		wantJobCount(t, b, "", 6)
	})
	for _, tc := range []struct {
		name     string
		jobs     string
		status   int
		location string
	}{
		{"one job breaks an engine rule", `[{"kind":"a"},{"kind":"b"},{"kind":"c","metadata":[1]}]`, http.StatusUnprocessableEntity, "body.jobs[2].metadata"},
		{"one job breaks a schema rule", `[{"kind":"a"},{"kind":"b","priority":10},{"kind":"c"}]`, http.StatusUnprocessableEntity, "body.jobs[1].priority"},
		{"one job has run_at and delay", `[{"kind":"a"},{"kind":"b","delay":"1s","run_at":"2031-01-01T00:00:00Z"}]`, http.StatusUnprocessableEntity, "body.jobs[1].run_at"},
		{"the only job breaks an engine rule", `[{"kind":"a","metadata":"x"}]`, http.StatusUnprocessableEntity, "body.jobs[0].metadata"},
		{"the only job has a bad tag", `[{"kind":"a","tags":["a b"]}]`, http.StatusUnprocessableEntity, "body.jobs[0].tags[0]"},
		{"one job has an unknown field", `[{"kind":"a"},{"kind":"b","kinds":"c"}]`, http.StatusBadRequest, "body.jobs[1].kinds"},
		{"empty list", `[]`, http.StatusUnprocessableEntity, "body.jobs"},
		{"null list", `null`, http.StatusUnprocessableEntity, "body.jobs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			r := b.do("POST", "/v1/jobs/batch", `{"jobs":`+tc.jobs+`}`)
			p := wantProblem(t, r, tc.status, "invalid_argument")
			wantLocation(t, p, tc.location)
			wantJobCount(t, b, "", 0)
		})
	}
	t.Run("missing jobs", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wantProblem(t, b.do("POST", "/v1/jobs/batch", `{}`), http.StatusUnprocessableEntity, "invalid_argument")
	})
}

// listFixture enqueues and moves jobs so that every filter has something
// to find and something to leave out. It returns the ids by name.
func listFixture(t *testing.T, b *bundle) map[string]int64 {
	t.Helper()
	ids := map[string]int64{}
	add := func(name string, body map[string]any) {
		ids[name] = b.enqueue(body).ID
	}
	add("a1", map[string]any{"kind": "a", "queue": "q1", "tags": []string{"red"}})
	add("a2", map[string]any{"kind": "a", "queue": "q2", "tags": []string{"red", "blue"}})
	add("b1", map[string]any{"kind": "b", "queue": "q1", "tags": []string{"blue"}})
	add("b2", map[string]any{"kind": "b", "queue": "q2"})
	add("later", map[string]any{"kind": "c", "queue": "q3", "delay": "1h"})
	if got := b.leaseOne("q1"); got.ID != ids["a1"] {
		t.Fatalf("leased %d, want a1 = %d", got.ID, ids["a1"])
	}
	wantStatus(t, b.do("POST", jobPath(ids["b2"], "cancel"), nil), http.StatusOK)
	return ids
}

func TestListJobsFilters(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		query string
		want  []string
	}{
		{"everything", "", []string{"a1", "a2", "b1", "b2", "later"}},
		{"one state", "state=available", []string{"a2", "b1"}},
		{"states comma-separated", "state=running,cancelled", []string{"a1", "b2"}},
		{"states repeated", "state=running&state=cancelled", []string{"a1", "b2"}},
		{"states repeated and comma-separated", "state=running&state=cancelled,scheduled", []string{"a1", "b2", "later"}},
		{"states with spaces", "state=running,%20scheduled", []string{"a1", "later"}},
		{"a state with no jobs", "state=discarded", nil},
		{"kind", "kind=a", []string{"a1", "a2"}},
		{"kinds", "kind=a,c", []string{"a1", "a2", "later"}},
		{"queue", "queue=q2", []string{"a2", "b2"}},
		{"tag", "tag=blue", []string{"a2", "b1"}},
		{"an unused tag", "tag=green", nil},
		{"kind and queue", "kind=b&queue=q1", []string{"b1"}},
		{"state, queue and tag", "state=available&queue=q1,q2&tag=red", []string{"a2"}},
		{"descending", "order=desc&kind=b", []string{"b2", "b1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			ids := listFixture(t, b)
			r := b.do("GET", "/v1/jobs?"+tc.query, nil)
			page := decode[jobList](t, r, http.StatusOK)
			var want []int64
			for _, n := range tc.want {
				want = append(want, ids[n])
			}
			if got := jobIDs(page.Jobs); !slices.Equal(got, want) {
				t.Errorf("ids = %v, want %v %v", got, tc.want, want)
			}
			if page.NextCursor != "" {
				t.Errorf("next_cursor = %q on the only page", page.NextCursor)
			}
			if page.Jobs == nil {
				t.Errorf("jobs is null, want an array: %s", r.body)
			}
		})
	}
}

func TestListJobsPaginates(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var all []int64
	for i := range 11 {
		kind := "even"
		if i%2 == 1 {
			kind = "odd"
		}
		all = append(all, b.enqueue(map[string]any{"kind": kind}).ID)
	}
	desc := slices.Clone(all)
	slices.Reverse(desc)
	var odd []int64
	for i, id := range all {
		if i%2 == 1 {
			odd = append(odd, id)
		}
	}
	for _, tc := range []struct {
		name  string
		query string
		limit int
		want  []int64
	}{
		{"ascending", "", 3, all},
		{"ascending by ones", "order=asc", 1, all},
		{"ascending, exact pages", "", 11, all},
		{"descending", "order=desc", 4, desc},
		{"descending, filtered", "order=desc&kind=odd", 2, reversed(odd)},
		{"ascending, filtered", "kind=odd", 2, odd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := b.withT(t)
			var got []int64
			cursor := ""
			for pages := 0; ; pages++ {
				if pages > len(tc.want)+1 {
					t.Fatalf("more than %d pages; ids so far %v", pages, got)
				}
				q := url.Values{"limit": {strconv.Itoa(tc.limit)}}
				if cursor != "" {
					q.Set("cursor", cursor)
				}
				r := b.do("GET", "/v1/jobs?"+q.Encode()+"&"+tc.query, nil)
				page := decode[jobList](t, r, http.StatusOK)
				if len(page.Jobs) > tc.limit {
					t.Fatalf("page of %d jobs, limit %d", len(page.Jobs), tc.limit)
				}
				got = append(got, jobIDs(page.Jobs)...)
				if page.NextCursor == "" {
					break
				}
				if len(page.Jobs) != tc.limit {
					t.Errorf("a page of %d jobs before the last, want %d", len(page.Jobs), tc.limit)
				}
				cursor = page.NextCursor
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("walked ids %v, want %v (each once, in order)", got, tc.want)
			}
		})
	}
	t.Run("default limit", func(t *testing.T) {
		t.Parallel()
		b := b.withT(t)
		page := decode[jobList](t, b.do("GET", "/v1/jobs?limit=0", nil), http.StatusOK)
		if len(page.Jobs) != len(all) || page.NextCursor != "" {
			t.Errorf("limit=0 gave %d jobs and cursor %q, want all %d (default 100)", len(page.Jobs), page.NextCursor, len(all))
		}
	})
	t.Run("cursor in the other order", func(t *testing.T) {
		t.Parallel()
		b := b.withT(t)
		page := decode[jobList](t, b.do("GET", "/v1/jobs?limit=2", nil), http.StatusOK)
		if page.NextCursor == "" {
			t.Fatal("no next_cursor on a first page of 2")
		}
		r := b.do("GET", "/v1/jobs?order=desc&cursor="+url.QueryEscape(page.NextCursor), nil)
		p := wantProblem(t, r, http.StatusBadRequest, "invalid_argument")
		wantLocation(t, p, "query.cursor")
		descPage := decode[jobList](t, b.do("GET", "/v1/jobs?limit=2&order=desc", nil), http.StatusOK)
		r = b.do("GET", "/v1/jobs?cursor="+url.QueryEscape(descPage.NextCursor), nil)
		wantProblem(t, r, http.StatusBadRequest, "invalid_argument")
	})
}

func reversed(ids []int64) []int64 {
	out := slices.Clone(ids)
	slices.Reverse(out)
	return out
}

func TestListJobsRejectsBadQuery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		query    string
		status   int
		location string
	}{
		{"garbage cursor", "cursor=garbage!", http.StatusBadRequest, "query.cursor"},
		{"base64 that is no cursor", "cursor=" + "aGVsbG8", http.StatusBadRequest, "query.cursor"},
		{"cursor of another version", "cursor=" + "djI6YXNjOjU", http.StatusBadRequest, "query.cursor"}, // v2:asc:5
		{"cursor with id 0", "cursor=" + "djE6YXNjOjA", http.StatusBadRequest, "query.cursor"},          // v1:asc:0
		{"unknown state", "state=available,sleeping", http.StatusUnprocessableEntity, "query.state"},
		{"limit 1001", "limit=1001", http.StatusUnprocessableEntity, "query.limit"},
		{"negative limit", "limit=-1", http.StatusUnprocessableEntity, "query.limit"},
		{"limit not a number", "limit=ten", http.StatusUnprocessableEntity, "query.limit"},
		{"unknown order", "order=random", http.StatusUnprocessableEntity, "query.order"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.enqueue(map[string]any{"kind": "k"})
			p := wantProblem(t, b.do("GET", "/v1/jobs?"+tc.query, nil), tc.status, "invalid_argument")
			wantLocation(t, p, tc.location)
		})
	}
}

func TestGetJob(t *testing.T) {
	t.Parallel()
	t.Run("with its errors history", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		failedAt := b.clock.Now()
		r := b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": leased.LeaseToken, "error": "boom", "detail": "stack", "retry_in": "0s"})
		wantStatus(t, r, http.StatusOK)
		b.clock.Advance(time.Minute)
		again := b.leaseOne("default")
		r = b.do("POST", jobPath(id, "fail"), map[string]any{"lease_token": again.LeaseToken, "error": "bang"})
		wantStatus(t, r, http.StatusOK)

		got := b.get(id)
		if got.State != "retryable" || got.Attempt != 2 || len(got.Errors) != 2 {
			t.Fatalf("job = %+v, want retryable after 2 attempts with 2 errors", got)
		}
		if e := got.Errors[0]; e.Attempt != 1 || e.Message != "boom" || e.Detail != "stack" || !e.At.Equal(failedAt) {
			t.Errorf("errors[0] = %+v, want attempt 1, boom, stack, at %s", e, failedAt)
		}
		if e := got.Errors[1]; e.Attempt != 2 || e.Message != "bang" || !e.At.Equal(failedAt.Add(time.Minute)) {
			t.Errorf("errors[1] = %+v, want attempt 2, bang", e)
		}
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wantProblem(t, b.do("GET", "/v1/jobs/12345", nil), http.StatusNotFound, "not_found")
	})
	t.Run("bad id", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for _, id := range []string{"abc", "0", "-3", "1.5"} {
			p := wantProblem(t, b.do("GET", "/v1/jobs/"+id, nil), http.StatusUnprocessableEntity, "invalid_argument")
			wantLocation(t, p, "path.id")
		}
	})
}

func TestLeaseTokenOnlyInLeaseResponses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.enqueue(map[string]any{"kind": "k", "unique": map[string]any{"key": "x"}}).ID
	b.enqueue(map[string]any{"kind": "k"})
	leased := b.lease(2, "default")
	token := leased[0].LeaseToken
	if token == "" || leased[1].LeaseToken == "" {
		t.Fatalf("lease response without tokens: %+v", leased)
	}
	noToken := func(what string, r *response) {
		t.Helper()
		if strings.Contains(string(r.body), "lease_token") || strings.Contains(string(r.body), token) {
			t.Errorf("%s shows the lease token: %s", what, r.body)
		}
	}
	get := b.do("GET", jobPath(id, ""), nil)
	wantStatus(t, get, http.StatusOK)
	noToken("GET /v1/jobs/{id}", get)
	if j := decode[apiJob](t, get, http.StatusOK); j.State != "running" || j.LeaseExpiry == nil {
		t.Errorf("GET of a running job = %+v, want running with lease_expires_at", j)
	}
	list := b.do("GET", "/v1/jobs?state=running", nil)
	wantStatus(t, list, http.StatusOK)
	noToken("GET /v1/jobs", list)
	hb := b.do("POST", jobPath(id, "heartbeat"), map[string]any{"lease_token": token})
	wantStatus(t, hb, http.StatusOK)
	noToken("heartbeat", hb)
	dup := b.do("POST", "/v1/jobs", map[string]any{"kind": "k", "unique": map[string]any{"key": "x"}})
	if j := decode[apiJob](t, dup, http.StatusOK); !j.Duplicate || j.ID != id {
		t.Errorf("enqueue of a duplicate = %+v, want job %d", j, id)
	}
	noToken("a duplicate enqueue", dup)
	complete := b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": token})
	wantStatus(t, complete, http.StatusOK)
	noToken("complete", complete)
	cancel := b.do("POST", jobPath(leased[1].ID, "cancel"), nil)
	wantStatus(t, cancel, http.StatusOK)
	if strings.Contains(string(cancel.body), "lease_token") {
		t.Errorf("cancel of a running job shows its lease token: %s", cancel.body)
	}
}

func TestCancelJob(t *testing.T) {
	t.Parallel()
	t.Run("available", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		got := decode[apiJob](t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusOK)
		if got.State != "cancelled" || got.FinalizedAt == nil {
			t.Errorf("cancel = %+v, want cancelled with finalized_at", got)
		}
		if b.get(id).State != "cancelled" {
			t.Error("GET after cancel is not cancelled")
		}
		again := decode[apiJob](t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusOK)
		if again.State != "cancelled" || !again.FinalizedAt.Equal(*got.FinalizedAt) {
			t.Errorf("second cancel = %+v, want the cancelled job unchanged", again)
		}
	})
	t.Run("running revokes the lease", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		got := decode[apiJob](t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusOK)
		if got.State != "cancelled" {
			t.Errorf("cancel of a running job = %+v, want cancelled", got)
		}
		for action, body := range settleBodies(leased.LeaseToken) {
			r := b.do("POST", jobPath(id, action), body)
			wantProblem(t, r, http.StatusConflict, "lease_lost")
		}
		if b.get(id).State != "cancelled" {
			t.Error("a settle after cancel changed the job")
		}
	})
	t.Run("completed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := completedJob(t, b)
		wantProblem(t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusConflict, "invalid_state")
		if b.get(id).State != "completed" {
			t.Error("a refused cancel changed the job")
		}
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wantProblem(t, b.do("POST", jobPath(99, "cancel"), nil), http.StatusNotFound, "not_found")
	})
}

func TestRetryJob(t *testing.T) {
	t.Parallel()
	t.Run("completed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := completedJob(t, b)
		b.clock.Advance(time.Minute)
		got := decode[apiJob](t, b.do("POST", jobPath(id, "retry"), nil), http.StatusOK)
		if got.State != "available" || !got.ScheduledAt.Equal(b.clock.Now()) {
			t.Errorf("retry = %+v, want available now (%s)", got, b.clock.Now())
		}
		if b.leaseOne("default").ID != id {
			t.Error("the retried job is not leased")
		}
	})
	t.Run("scheduled", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k", "delay": "1h"}).ID
		got := decode[apiJob](t, b.do("POST", jobPath(id, "retry"), nil), http.StatusOK)
		if got.State != "available" {
			t.Errorf("retry of a scheduled job = %+v, want available", got)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		wantStatus(t, b.do("POST", jobPath(id, "cancel"), nil), http.StatusOK)
		got := decode[apiJob](t, b.do("POST", jobPath(id, "retry"), nil), http.StatusOK)
		if got.State != "available" {
			t.Errorf("retry of a cancelled job = %+v, want available", got)
		}
	})
	t.Run("running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		b.leaseOne("default")
		wantProblem(t, b.do("POST", jobPath(id, "retry"), nil), http.StatusConflict, "invalid_state")
		if b.get(id).State != "running" {
			t.Error("a refused retry changed the job")
		}
	})
	t.Run("not found", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		wantProblem(t, b.do("POST", jobPath(99, "retry"), nil), http.StatusNotFound, "not_found")
	})
}

func TestDeleteJob(t *testing.T) {
	t.Parallel()
	t.Run("available", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		r := b.do("DELETE", jobPath(id, ""), nil)
		wantStatus(t, r, http.StatusNoContent)
		if len(r.body) != 0 {
			t.Errorf("204 with a body: %q", r.body)
		}
		wantProblem(t, b.do("GET", jobPath(id, ""), nil), http.StatusNotFound, "not_found")
		wantProblem(t, b.do("DELETE", jobPath(id, ""), nil), http.StatusNotFound, "not_found")
	})
	t.Run("completed", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := completedJob(t, b)
		wantStatus(t, b.do("DELETE", jobPath(id, ""), nil), http.StatusNoContent)
		wantJobCount(t, b, "", 0)
	})
	t.Run("running", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.enqueue(map[string]any{"kind": "k"}).ID
		leased := b.leaseOne("default")
		wantProblem(t, b.do("DELETE", jobPath(id, ""), nil), http.StatusConflict, "invalid_state")
		r := b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": leased.LeaseToken})
		if decode[apiJob](t, r, http.StatusOK).State != "completed" {
			t.Error("the job a refused delete left could not be completed")
		}
	})
}

// settleBodies gives a valid body for each worker call on a leased job.
func settleBodies(token string) map[string]map[string]any {
	return map[string]map[string]any{
		"heartbeat": {"lease_token": token},
		"complete":  {"lease_token": token, "output": 1},
		"fail":      {"lease_token": token, "error": "x"},
		"snooze":    {"lease_token": token, "delay": "1s"},
	}
}

// completedJob enqueues, leases and completes a job and returns its id.
func completedJob(t *testing.T, b *bundle) int64 {
	t.Helper()
	id := b.enqueue(map[string]any{"kind": "k"}).ID
	leased := b.leaseOne("default")
	r := b.do("POST", jobPath(id, "complete"), map[string]any{"lease_token": leased.LeaseToken})
	if got := decode[apiJob](t, r, http.StatusOK); got.State != "completed" {
		t.Fatalf("complete = %+v", got)
	}
	return id
}

// wantJobCount checks how many jobs GET /v1/jobs?query lists.
func wantJobCount(t *testing.T, b *bundle, query string, n int) {
	t.Helper()
	page := decode[jobList](t, b.do("GET", "/v1/jobs?limit=1000&"+query, nil), http.StatusOK)
	if len(page.Jobs) != n {
		t.Errorf("GET /v1/jobs?%s lists %d jobs, want %d: %v", query, len(page.Jobs), n, jobIDs(page.Jobs))
	}
}

func jobIDs(jobs []apiJob) []int64 {
	var ids []int64
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	return ids
}
