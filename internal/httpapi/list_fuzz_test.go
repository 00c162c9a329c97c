package httpapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
)

// FuzzListJobs sends arbitrary queries to GET /v1/jobs (filters, limits,
// orders and cursors) and arbitrary queue names to the pause and resume
// calls. A listing is 200, 400 or 422; its next_cursor continues the
// listing, and the same cursor with one character changed is refused with
// 400 at query.cursor. Pausing or resuming a queue succeeds exactly for a
// valid queue name, and otherwise changes nothing.
func FuzzListJobs(f *testing.F) {
	api := newFuzzAPI(f, nil)
	for _, s := range []job.Spec{
		{Kind: "a"}, {Kind: "b", Queue: "q1", Tags: []string{"t"}}, {Kind: "a", Queue: "q2"},
		{Kind: "c", Priority: 1}, {Kind: "a", Tags: []string{"t", "u"}},
	} {
		if _, err := api.eng.Enqueue(f.Context(), s); err != nil {
			f.Fatalf("enqueue: %v", err)
		}
	}
	f.Add("limit=2", "q1", uint16(0), true)
	f.Add("limit=1&order=desc&kind=a,b&state=available", "default", uint16(5), false)
	f.Add("state=available,sleeping", "a b", uint16(0), true)
	f.Add("limit=1001&cursor=djE6YXNjOjQ", "", uint16(1), true)
	f.Add("cursor=%ff&tag=t&limit=1", "q%2F1", uint16(2), false)
	f.Add("queue=q1&queue=q2&limit=-1", "é", uint16(3), true)
	f.Add("limit=1&order=asc&cursor=", "k"+string(make([]byte, 128)), uint16(23), true)
	f.Fuzz(func(t *testing.T, query, name string, pos uint16, pause bool) {
		r := api.do(t, http.MethodGet, "/v1/jobs?"+query, nil, nil)
		api.check(t, r)
		switch r.status {
		case http.StatusOK:
			var page struct {
				Jobs       []httpapi.Job `json:"jobs"`
				NextCursor string        `json:"next_cursor"`
			}
			if err := strictDecode(r.body, &page); err != nil {
				t.Fatalf("list answered %s: %v", r, err)
			}
			if page.NextCursor == "" {
				break
			}
			q, err := url.ParseQuery(query)
			if err != nil {
				break // huma read what it could; rebuilding it is guesswork
			}
			q.Set("cursor", page.NextCursor)
			next := api.do(t, http.MethodGet, "/v1/jobs?"+q.Encode(), nil, nil)
			api.check(t, next)
			if next.status != http.StatusOK {
				t.Fatalf("the next_cursor of %q was refused: %s", query, next)
			}
			c := []byte(page.NextCursor)
			i := int(pos) % len(c)
			c[i] = "AQgw_-"[(int(c[i])+int(pos))%6]
			if c[i] == page.NextCursor[i] {
				c[i] = "BRhx-_"[(int(c[i])+int(pos))%6]
			}
			q.Set("cursor", string(c))
			tampered := api.do(t, http.MethodGet, "/v1/jobs?"+q.Encode(), nil, nil)
			api.check(t, tampered)
			if tampered.status != http.StatusBadRequest {
				t.Fatalf("cursor %q tampered as %q answered %s", page.NextCursor, c, tampered)
			}
		case http.StatusBadRequest, http.StatusUnprocessableEntity:
		default:
			t.Fatalf("list %q answered %s", query, r)
		}

		if name == "" || name == "." || name == ".." {
			return // ServeMux redirects such paths to their clean form
		}
		verb := "resume"
		if pause {
			verb = "pause"
		}
		before := api.snapshot(t)
		r = api.do(t, http.MethodPost, "/v1/queues/"+url.PathEscape(name)+"/"+verb, nil, nil)
		api.check(t, r)
		if err := job.ValidateName(name); err != nil {
			if r.status < 400 {
				t.Fatalf("%s of queue %q (%v) answered %s", verb, name, err, r)
			}
			if after := api.snapshot(t); after != before {
				t.Fatalf("refused %s of %q changed the store:\nbefore %s\nafter  %s", verb, name, before, after)
			}
			return
		}
		var q httpapi.Queue
		if r.status != http.StatusOK || strictDecode(r.body, &q) != nil || q.Name != name || q.Paused != pause {
			t.Fatalf("%s of queue %q answered %s", verb, name, r)
		}
	})
}
