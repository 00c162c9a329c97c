package httpapi_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/job"
)

type queueInfo struct {
	Name   string         `json:"name"`
	Paused bool           `json:"paused"`
	Counts map[string]int `json:"counts"`
}

func TestListQueues(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for range 3 {
		b.enqueue(map[string]any{"kind": "k", "queue": "q1"})
	}
	b.leaseOne("q1")
	b.enqueue(map[string]any{"kind": "k", "queue": "q2", "delay": "1h"})
	cancelled := b.enqueue(map[string]any{"kind": "k", "queue": "q2"}).ID
	wantStatus(t, b.do("POST", jobPath(cancelled, "cancel"), nil), http.StatusOK)
	wantStatus(t, b.do("POST", "/v1/queues/q2/pause", nil), http.StatusOK)

	r := b.do("GET", "/v1/queues", nil)
	got := decode[struct {
		Queues []queueInfo `json:"queues"`
	}](t, r, http.StatusOK).Queues
	byName := map[string]queueInfo{}
	for _, q := range got {
		byName[q.Name] = q
		if len(q.Counts) != len(job.States) {
			t.Errorf("queue %s has counts for %d states, want all %d: %v", q.Name, len(q.Counts), len(job.States), q.Counts)
		}
		for _, st := range job.States {
			if _, ok := q.Counts[string(st)]; !ok {
				t.Errorf("queue %s has no count for %s", q.Name, st)
			}
		}
	}
	want := map[string]queueInfo{
		"q1": {Name: "q1", Counts: map[string]int{"available": 2, "running": 1}},
		"q2": {Name: "q2", Paused: true, Counts: map[string]int{"scheduled": 1, "cancelled": 1}},
	}
	for name, w := range want {
		q, ok := byName[name]
		if !ok {
			t.Errorf("queue %s missing from %s", name, r.body)
			continue
		}
		if q.Paused != w.Paused {
			t.Errorf("queue %s paused = %v, want %v", name, q.Paused, w.Paused)
		}
		for _, st := range job.States {
			if q.Counts[string(st)] != w.Counts[string(st)] {
				t.Errorf("queue %s %s = %d, want %d", name, st, q.Counts[string(st)], w.Counts[string(st)])
			}
		}
	}
}

func TestListQueuesEmpty(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do("GET", "/v1/queues", nil)
	wantStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"queues":[]}` {
		t.Errorf("body = %s, want {\"queues\":[]}", got)
	}
}

func TestPauseAndResumeQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(map[string]any{"kind": "k", "queue": "mail"})
	paused := decode[queueInfo](t, b.do("POST", "/v1/queues/mail/pause", nil), http.StatusOK)
	if paused.Name != "mail" || !paused.Paused || paused.Counts["available"] != 1 || len(paused.Counts) != len(job.States) {
		t.Errorf("pause = %+v, want mail paused with 1 available and every state counted", paused)
	}
	again := decode[queueInfo](t, b.do("POST", "/v1/queues/mail/pause", nil), http.StatusOK)
	if !again.Paused {
		t.Errorf("pausing a paused queue = %+v", again)
	}
	if len(b.lease(1, "mail")) != 0 {
		t.Error("leased from a paused queue")
	}
	resumed := decode[queueInfo](t, b.do("POST", "/v1/queues/mail/resume", nil), http.StatusOK)
	if resumed.Name != "mail" || resumed.Paused || resumed.Counts["available"] != 1 {
		t.Errorf("resume = %+v, want mail not paused with 1 available", resumed)
	}
	if len(b.lease(1, "mail")) != 1 {
		t.Error("nothing leased from the resumed queue")
	}

	empty := decode[queueInfo](t, b.do("POST", "/v1/queues/never-used/pause", nil), http.StatusOK)
	if empty.Name != "never-used" || !empty.Paused || len(empty.Counts) != len(job.States) {
		t.Errorf("pause of a queue with no jobs = %+v, want paused with zero counts", empty)
	}
	for st, n := range empty.Counts {
		if n != 0 {
			t.Errorf("queue with no jobs has %s = %d", st, n)
		}
	}
}

func TestPauseQueueRejectsInvalidName(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, name := range []string{"a%20b", "a%2Fb", "caf%C3%A9", strings.Repeat("q", 129)} {
		for _, verb := range []string{"pause", "resume"} {
			p := wantProblem(t, b.do("POST", "/v1/queues/"+name+"/"+verb, nil), http.StatusUnprocessableEntity, "invalid_argument")
			wantLocation(t, p, "path.name")
		}
	}
}

// assetURL finds scripts, styles and imports loaded from another site.
var assetURL = regexp.MustCompile(`(?i)(<script[^>]*\ssrc\s*=\s*["']?(https?:)?//|<link[^>]*\shref\s*=\s*["']?(https?:)?//|@import\s+(url\()?["']?(https?:)?//|\bimport\s*\(?\s*["'](https?:)?//|\bfrom\s*["'](https?:)?//|url\(\s*["']?(https?:)?//)`)

func TestDocsPageNeedsNoCDN(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.do("GET", "/docs", nil)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type = %q, want text/html", ct)
	}
	page := string(r.body)
	if !strings.Contains(strings.ToLower(page), "<html") || !strings.Contains(page, "/openapi.json") {
		t.Errorf("the page is not HTML that loads /openapi.json: %.200s", page)
	}
	if m := assetURL.FindString(page); m != "" {
		t.Errorf("the page loads an outside asset: %q", m)
	}
	if strings.Contains(page, "http://") || strings.Contains(page, "https://") {
		t.Errorf("the page has an absolute URL; every asset must be inline")
	}
}

func TestAssetURLPattern(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		`<script src="https://cdn.example.com/x.js"></script>`,
		`<script defer src=//unpkg.com/x.js></script>`,
		`<link rel="stylesheet" href="https://cdn.example.com/x.css">`,
		`<style>@import url("https://fonts.example.com/f.css");</style>`,
		`<script type="module">import x from "https://esm.sh/x";</script>`,
	} {
		if !assetURL.MatchString(s) {
			t.Errorf("assetURL misses %s", s)
		}
	}
	for _, s := range []string{`<script>fetch("/openapi.json")</script>`, `<a href="/openapi.json">`} {
		if assetURL.MatchString(s) {
			t.Errorf("assetURL matches %s", s)
		}
	}
}
