package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// workerOps are the worker calls FuzzWorker drives, by op % len.
var workerOps = []string{"lease", "heartbeat", "complete", "fail", "snooze"}

// FuzzWorker posts arbitrary bodies to the worker calls: lease, and
// heartbeat, complete, fail and snooze of a job just leased (known) or of
// one that does not exist. In the body, $TOKEN stands for the held job's
// lease token, so that the fuzzer can reach the calls that succeed.
func FuzzWorker(f *testing.F) {
	api := newFuzzAPI(f, nil)
	f.Add(uint8(0), []byte(`{"queues":["default"],"max":2,"lease_for":"10s","worker":"w1"}`), true)
	f.Add(uint8(0), []byte(`{"queues":["default","fz-held"],"wait":"1s"}`), true)
	f.Add(uint8(1), []byte(`{"lease_token":"$TOKEN","lease_for":"1m"}`), true)
	f.Add(uint8(1), []byte(`{"lease_token":"$TOKEN","lease_for":"1ms"}`), true)
	f.Add(uint8(2), []byte(`{"lease_token":"$TOKEN","output":{"ok":true}}`), true)
	f.Add(uint8(2), []byte(`{"lease_token":"$TOKEN","output":"\ud800"}`), true)
	f.Add(uint8(2), []byte(`{"lease_token":"wrong"}`), true)
	f.Add(uint8(3), []byte(`{"lease_token":"$TOKEN","error":"boom","detail":"stack","retry_in":"1s"}`), true)
	f.Add(uint8(3), []byte("{\"lease_token\":\"$TOKEN\",\"error\":\"bad \xff byte\"}"), true)
	f.Add(uint8(3), []byte(`{"lease_token":"$TOKEN","error":"lone \udc00"}`), true)
	f.Add(uint8(3), []byte(`{"lease_token":"$TOKEN","error":"nul \u0000","discard":true}`), true)
	f.Add(uint8(4), []byte(`{"lease_token":"$TOKEN","delay":"1h"}`), true)
	f.Add(uint8(4), []byte(`{"lease_token":"$TOKEN","delay":"-1s"}`), false)
	f.Fuzz(func(t *testing.T, op uint8, body []byte, known bool) {
		ctx := t.Context()
		// A job leased by someone else: the target of the settle calls.
		if _, err := api.eng.Enqueue(ctx, job.Spec{Kind: "fz", Queue: "fz-held"}, job.Spec{Kind: "fz"}); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
		held, err := api.eng.Lease(ctx, engine.LeaseRequest{Queues: []string{"fz-held"}, Worker: "prep"})
		if err != nil || len(held) != 1 {
			t.Fatalf("lease the held job: %v, %v", held, err)
		}
		h := held[0]
		id := int64(h.ID)
		if !known {
			id = 1 << 50
		}
		body = bytes.ReplaceAll(body, []byte("$TOKEN"), []byte(h.LeaseToken))
		name := workerOps[int(op)%len(workerOps)]
		path := "/v1/lease"
		if name != "lease" {
			path = "/v1/jobs/" + strconv.FormatInt(id, 10) + "/" + name
		}

		before := api.snapshot(t)
		heldBefore := getJob(t, api, h.ID)
		r := api.do(t, http.MethodPost, path, http.Header{"Content-Type": {"application/json"}}, body)
		api.check(t, r)
		if r.status >= 400 {
			if after := api.snapshot(t); after != before {
				t.Fatalf("%d changed the store:\nbefore %s\nafter  %s", r.status, before, after)
			}
			if after := getJob(t, api, h.ID); !reflect.DeepEqual(after, heldBefore) {
				t.Fatalf("%d changed the held job:\nbefore %+v\nafter  %+v", r.status, heldBefore, after)
			}
			return
		}
		if job.CheckJSONText(body) != nil {
			t.Fatalf("accepted body %q: %s", body, r)
		}
		checkNoReplacement(t, body, r)

		switch name {
		case "lease":
			var req struct{ Queues []string }
			var res struct{ Jobs []httpapi.Job }
			if err := json.Unmarshal(body, &req); err != nil || strictDecode(r.body, &res) != nil {
				t.Fatalf("lease %q answered %s (%v)", body, r, err)
			}
			for _, j := range res.Jobs {
				if j.State != string(job.StateRunning) || j.LeaseToken == "" || j.LeaseExpiry == nil || !slices.Contains(req.Queues, j.Queue) {
					t.Fatalf("leased %+v for queues %q", j, req.Queues)
				}
			}
		case "heartbeat":
			var res struct {
				ID             int64     `json:"id"`
				LeaseExpiresAt time.Time `json:"lease_expires_at"`
			}
			if err := strictDecode(r.body, &res); err != nil || res.ID != id || res.LeaseExpiresAt.Before(api.eng.Now().Add(engine.MinLeaseFor)) {
				t.Fatalf("heartbeat answered %s (%v)", r, err)
			}
		case "complete":
			var req struct{ Output json.RawMessage }
			var res httpapi.Job
			if err := json.Unmarshal(body, &req); err != nil || strictDecode(r.body, &res) != nil {
				t.Fatalf("complete %q answered %s (%v)", body, r, err)
			}
			if res.State != string(job.StateCompleted) || compactOr(t, res.Output, "") != compactOr(t, req.Output, "") {
				t.Fatalf("completed with output %s as %+v", req.Output, res)
			}
		case "fail":
			var req struct{ Error, Detail string }
			var res httpapi.Job
			if err := json.Unmarshal(body, &req); err != nil || strictDecode(r.body, &res) != nil {
				t.Fatalf("fail %q answered %s (%v)", body, r, err)
			}
			if len(res.Errors) == 0 {
				t.Fatalf("failed job has no error history: %+v", res)
			}
			last := res.Errors[len(res.Errors)-1]
			// The message is recorded as sent: only cut to its limit, and a
			// NUL (which PostgreSQL's text refuses) shown as U+FFFD.
			wantMsg := job.TruncateUTF8(store.CleanText(cmpOr(req.Error, "failed")), job.MaxErrorMessageBytes)
			wantDetail := job.TruncateUTF8(store.CleanText(req.Detail), job.MaxErrorDetailBytes)
			if last.Message != wantMsg || last.Detail != wantDetail {
				t.Fatalf("failed with error %q, detail %q; recorded %q, %q", req.Error, req.Detail, last.Message, last.Detail)
			}
		case "snooze":
			var res httpapi.Job
			if err := strictDecode(r.body, &res); err != nil ||
				(res.State != string(job.StateScheduled) && res.State != string(job.StateAvailable)) {
				t.Fatalf("snooze answered %s (%v)", r, err)
			}
		}
	})
}

// getJob reads one job from the engine.
func getJob(t *testing.T, api *fuzzAPI, id job.ID) *job.Job {
	t.Helper()
	j, err := api.eng.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get job %d: %v", id, err)
	}
	return j
}
