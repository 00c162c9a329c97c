package httpapi_test

import (
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// TestBodiesInInvalidUnicodeAreRefused checks that a request body that is
// not valid UTF-8, or whose strings escape a lone UTF-16 surrogate, is
// refused with 400 invalid_argument and changes nothing. encoding/json
// alone would decode both as U+FFFD: a worker's error message would be
// recorded other than sent, and two different unique keys would collide.
func TestBodiesInInvalidUnicodeAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.enqueue(map[string]any{"kind": "k", "queue": "held"})
	held := b.leaseOne("held")
	before := b.get(held.ID)
	// The refusals run in parallel in a group, which returns when all of
	// them are done: the checks below come after.
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name, path, body string
		}{
			{"fail with an invalid byte", jobPath(held.ID, "fail"), "{\"lease_token\":\"" + held.LeaseToken + "\",\"error\":\"bad \xff byte\"}"},
			{"fail with an overlong encoding", jobPath(held.ID, "fail"), "{\"lease_token\":\"" + held.LeaseToken + "\",\"error\":\"\xc0\xaf\"}"},
			{"fail with a lone surrogate", jobPath(held.ID, "fail"), `{"lease_token":"` + held.LeaseToken + `","error":"x","detail":"\ud800"}`},
			{"complete with a lone surrogate", jobPath(held.ID, "complete"), `{"lease_token":"` + held.LeaseToken + `","output":{"a":"\udc00"}}`},
			{"enqueue with an invalid unique key", "/v1/jobs", "{\"kind\":\"k\",\"unique\":{\"key\":\"\xfe\"}}"},
			{"enqueue with invalid args", "/v1/jobs", "{\"kind\":\"k\",\"args\":[\"\xff\"]}"},
			{"batch with a lone surrogate in a tag", "/v1/jobs/batch", `{"jobs":[{"kind":"k","tags":["\ud83d"]}]}`},
			{"lease with an invalid worker name", "/v1/lease", "{\"queues\":[\"default\"],\"worker\":\"w\xff\"}"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				b := b.withT(t)
				p := wantProblem(t, b.do("POST", tc.path, tc.body), http.StatusBadRequest, "invalid_argument")
				if !strings.Contains(p.Detail+p.Errors[0].Message, "UTF-8") && !strings.Contains(p.Errors[0].Message, "surrogate") {
					t.Errorf("problem %+v does not say what was wrong", p)
				}
			})
		}
	})
	if after := b.get(held.ID); !reflect.DeepEqual(after, before) {
		t.Errorf("the held job changed:\nbefore %+v\nafter  %+v", before, after)
	}
	if page := decode[jobList](t, b.do("GET", "/v1/jobs?"+url.Values{"queue": {"default"}}.Encode(), nil), http.StatusOK); len(page.Jobs) != 0 {
		t.Errorf("refused enqueues stored %d jobs", len(page.Jobs))
	}

	// The same text in valid Unicode is recorded as sent.
	r := b.do("POST", jobPath(held.ID, "fail"), `{"lease_token":"`+held.LeaseToken+`","error":"ok \ud83d\ude00 \ufffd é"}`)
	j := decode[apiJob](t, r, http.StatusOK)
	if got := j.Errors[len(j.Errors)-1].Message; got != "ok 😀 \uFFFD é" {
		t.Errorf("recorded message %q", got)
	}
}
