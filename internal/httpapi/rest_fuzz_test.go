package httpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacyrouter "github.com/getkin/kin-openapi/routers/legacy"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv"
)

// The REST fuzz targets drive the real handlers (huma's decoding and
// validation, the engine, a real embedded store) with arbitrary bodies,
// headers and queries, and check what every response must satisfy:
//
//   - its status is one the OpenAPI document lists for the operation, and
//     never 5xx; its body matches the documented schema;
//   - an error is a problem whose code agrees with its status;
//   - a 4xx changes nothing in the store;
//   - a 2xx decodes strictly as the documented type, and what it reports
//     (the stored job, its args, output or error message) is what the
//     request sent, never silently altered: in particular no U+FFFD
//     appears that the request did not spell.
//
// One store serves every iteration of a fuzz process (opening one per
// input would dominate the time), so properties are stated relative to a
// snapshot taken just before each request.

// fuzzArgsLimit and fuzzBodyLimit are small, so that the fuzzer reaches
// the size limits.
const (
	fuzzArgsLimit = 4 << 10
	fuzzBodyLimit = 8 << 10
)

// fuzzAPI is the REST API over an engine and embedded store, shared by
// every input of one fuzz target in one process.
type fuzzAPI struct {
	eng     *engine.Engine
	st      store.Store
	handler http.Handler
	doc     *openapi3.T
	router  routers.Router
}

// newFuzzAPI opens the store in f's temporary directory and serves the API
// in process. wrap, when not nil, wraps the mux (for authentication).
func newFuzzAPI(f *testing.F, wrap func(store.Store, http.Handler) http.Handler) *fuzzAPI {
	f.Helper()
	st, err := sqlitestore.Open(f.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		f.Fatalf("open store: %v", err)
	}
	f.Cleanup(func() {
		if err := st.Close(); err != nil {
			f.Errorf("close store: %v", err)
		}
	})
	eng, err := engine.New(engine.Config{
		Store: st, Now: testenv.NewClock().Now, Logger: discardLogger(),
		Limits:  job.Limits{MaxArgsBytes: fuzzArgsLimit},
		MaxWait: time.Millisecond, // a long poll must not stall the fuzzer
	})
	if err != nil {
		f.Fatalf("engine.New: %v", err)
	}
	mux := http.NewServeMux()
	api := httpapi.New(mux, eng, httpapi.Options{Logger: discardLogger(), MaxArgsBytes: fuzzArgsLimit, MaxBodyBytes: fuzzBodyLimit})
	a := &fuzzAPI{eng: eng, st: st, handler: mux}
	if wrap != nil {
		a.handler = wrap(st, mux)
	}

	raw, err := json.Marshal(api.OpenAPI())
	if err != nil {
		f.Fatalf("encode the OpenAPI document: %v", err)
	}
	loader := openapi3.NewLoader()
	if a.doc, err = loader.LoadFromData(raw); err != nil {
		f.Fatalf("load the OpenAPI document: %v", err)
	}
	// As in loadSpec: a schema without a type means any value.
	anyType := openapi3.Types{"null", "boolean", "object", "array", "number", "string", "integer"}
	_ = a.doc.WalkSchemas(func(_ string, s *openapi3.SchemaRef) error {
		v := s.Value
		if (v.Type == nil || len(*v.Type) == 0) && len(v.AllOf)+len(v.AnyOf)+len(v.OneOf) == 0 && v.Not == nil {
			v.Type = &anyType
		}
		return nil
	})
	a.doc.Servers = nil
	if a.router, err = legacyrouter.NewRouter(a.doc); err != nil {
		f.Fatalf("router over the OpenAPI document: %v", err)
	}
	return a
}

// do serves one request in process. A target that net/http could not
// even parse from the wire is skipped.
func (a *fuzzAPI) do(t *testing.T, method, target string, hdr http.Header, body []byte) *response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, "http://drover.test"+target, bytes.NewReader(body))
	if err != nil {
		t.Skipf("not a request target: %v", err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	rec := httptest.NewRecorder()
	a.handler.ServeHTTP(rec, req)
	res := rec.Result()
	defer res.Body.Close()
	return &response{req: req, status: res.StatusCode, header: res.Header, body: rec.Body.Bytes()}
}

// problemCodes are the stable codes a problem may carry.
var problemCodes = []string{
	"invalid_argument", "too_large", "not_found", "lease_lost", "invalid_state", "conflict",
	"idempotency_mismatch", "overloaded", "unavailable", "unauthorized", "forbidden",
}

// check asserts what every response must satisfy: a documented status
// (never 5xx), a body that matches the document, and for errors a problem
// whose code agrees with its status.
func (a *fuzzAPI) check(t *testing.T, r *response) {
	t.Helper()
	if r.status >= 500 {
		t.Fatalf("%s %s: server error %s", r.req.Method, r.req.URL, r)
	}
	if route, params, err := a.router.FindRoute(r.req); err == nil {
		if route.Operation.Responses.Value(strconv.Itoa(r.status)) == nil {
			t.Fatalf("%s %s: status %d is not documented for %s: %s", r.req.Method, r.req.URL, r.status, route.Operation.OperationID, r)
		}
		in := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r.req, PathParams: params, Route: route},
			Status:                 r.status,
			Header:                 r.header,
			Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
		}
		in.SetBodyBytes(r.body)
		if err := openapi3filter.ValidateResponse(t.Context(), in); err != nil {
			t.Fatalf("%s %s: the response does not match the document: %v\n%s", r.req.Method, r.req.URL, err, r)
		}
	}
	if r.status < 400 {
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("%s %s: error with Content-Type %q: %s", r.req.Method, r.req.URL, ct, r)
	}
	var p httpapi.Problem
	if err := strictDecode(r.body, &p); err != nil {
		t.Fatalf("%s %s: error body is not a problem: %v: %s", r.req.Method, r.req.URL, err, r)
	}
	if p.Status != r.status || !slices.Contains(problemCodes, p.Code) || p.Type != "urn:drover:problem:"+p.Code {
		t.Fatalf("%s %s: problem %+v for status %d", r.req.Method, r.req.URL, p, r.status)
	}
	want := map[string][]int{
		"invalid_argument": {400, 405, 415, 422}, "idempotency_mismatch": {422}, "too_large": {413},
		"not_found": {404}, "lease_lost": {409}, "invalid_state": {409}, "conflict": {409},
		"overloaded": {429}, "unavailable": {503}, "unauthorized": {401}, "forbidden": {403},
	}[p.Code]
	if !slices.Contains(want, r.status) {
		t.Fatalf("%s %s: code %s with status %d", r.req.Method, r.req.URL, p.Code, r.status)
	}
}

// strictDecode decodes one JSON value into v, refusing unknown fields and
// trailing data.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the value")
	}
	return nil
}

// snapshot is what a request that fails must leave as it was: every
// queue's counts per state and paused flag, and the highest job id.
func (a *fuzzAPI) snapshot(t *testing.T) string {
	t.Helper()
	qs, err := a.eng.Queues(t.Context())
	if err != nil {
		t.Fatalf("queues: %v", err)
	}
	var b strings.Builder
	for _, q := range qs {
		fmt.Fprintf(&b, "%s paused=%v", q.Name, q.Paused)
		for _, s := range job.States {
			fmt.Fprintf(&b, " %s=%d", s, q.Counts[s])
		}
		b.WriteByte('\n')
	}
	page, err := a.eng.List(t.Context(), store.ListParams{Limit: 1, Desc: true})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(page.Jobs) > 0 {
		fmt.Fprintf(&b, "max id %d\n", page.Jobs[0].ID)
	}
	return b.String()
}

// total is the number of jobs in a snapshot's counts.
func (a *fuzzAPI) total(t *testing.T) int {
	t.Helper()
	qs, err := a.eng.Queues(t.Context())
	if err != nil {
		t.Fatalf("queues: %v", err)
	}
	n := 0
	for _, q := range qs {
		for _, c := range q.Counts {
			n += c
		}
	}
	return n
}

// maxID is the highest job id, 0 when there is none.
func (a *fuzzAPI) maxID(t *testing.T) int64 {
	t.Helper()
	page, err := a.eng.List(t.Context(), store.ListParams{Limit: 1, Desc: true})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(page.Jobs) == 0 {
		return 0
	}
	return int64(page.Jobs[0].ID)
}

// spellsReplacement reports whether a request spells U+FFFD, raw or
// escaped, or a NUL escape, which stores record as U+FFFD.
func spellsReplacement(b []byte) bool {
	lower := bytes.ToLower(b)
	return bytes.Contains(b, []byte("\uFFFD")) || bytes.Contains(lower, []byte(`\ufffd`)) || bytes.Contains(b, []byte(`\u0000`))
}

// checkNoReplacement fails when a response holds a U+FFFD that the
// request did not spell: the sign of text silently altered.
func checkNoReplacement(t *testing.T, req []byte, r *response) {
	t.Helper()
	lower := bytes.ToLower(r.body)
	if (bytes.Contains(r.body, []byte("\uFFFD")) || bytes.Contains(lower, []byte(`\ufffd`))) && !spellsReplacement(req) {
		t.Fatalf("%s %s: the response holds U+FFFD that the request %q did not spell: %s", r.req.Method, r.req.URL, req, r)
	}
}

// compactOr returns raw compacted, or def when raw is empty.
func compactOr(t *testing.T, raw json.RawMessage, def string) string {
	t.Helper()
	if len(raw) == 0 {
		return def
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("compact %q: %v", raw, err)
	}
	return b.String()
}

// validKey is the documented rule for idempotency keys.
func validKey(k string) bool {
	if k == "" || len(k) > 255 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

// sendableHeader reports whether net/http would send v as a header value
// at all (no control characters but tab); others never reach a handler.
func sendableHeader(v string) bool {
	for i := 0; i < len(v); i++ {
		if (v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// enqueueRequest is the part of an enqueue body that the checks compare
// with the stored job, decoded as huma decodes it.
type enqueueRequest struct {
	Kind  string          `json:"kind"`
	Queue string          `json:"queue"`
	Args  json.RawMessage `json:"args"`
}

// FuzzEnqueue posts arbitrary bodies to POST /v1/jobs and /v1/jobs/batch,
// with or without an Idempotency-Key.
func FuzzEnqueue(f *testing.F) {
	api := newFuzzAPI(f, nil)
	f.Add([]byte(`{"kind":"email.send","args":{"to":"a@b"}}`), false, "")
	f.Add([]byte(`{"kind":"k","args":[1,2,3],"queue":"q","priority":1,"max_attempts":3,"tags":["a"],"metadata":{"m":1}}`), false, "key-1")
	f.Add([]byte(`{"jobs":[{"kind":"a"},{"kind":"b","args":null}]}`), true, "")
	f.Add([]byte(`{"jobs":[{"kind":"a","unique":{"key":"u"}},{"kind":"a","unique":{"key":"u"}}]}`), true, "batch-key")
	f.Add([]byte(`{"kind":"k","unique":{"by_args":true,"period":"1h"},"args":{"b":1,"a":2}}`), false, "")
	f.Add([]byte(`{"kind":"k","args":"\ud800"}`), false, "")
	f.Add([]byte("{\"kind\":\"k\",\"args\":\"\xff\"}"), false, "")
	f.Add([]byte(`{"kind":"k","args":`+nestJSON(job.MaxJSONDepth+1)+`}`), false, "")
	f.Add([]byte(`{"kind":"k","run_at":"2030-01-02T03:04:05Z","delay":"1s"}`), false, "")
	f.Add([]byte(`{"kind":"k","kind":"j"}`), false, "k\x01")
	f.Fuzz(func(t *testing.T, body []byte, batch bool, key string) {
		path := "/v1/jobs"
		if batch {
			path = "/v1/jobs/batch"
		}
		hdr := http.Header{"Content-Type": {"application/json"}}
		useKey := key != "" && sendableHeader(key)
		if useKey {
			hdr.Set("Idempotency-Key", key)
		}
		before, total, maxID := api.snapshot(t), api.total(t), api.maxID(t)
		r := api.do(t, http.MethodPost, path, hdr, body)
		api.check(t, r)
		if r.status >= 400 {
			if after := api.snapshot(t); after != before {
				t.Fatalf("%d changed the store:\nbefore %s\nafter  %s", r.status, before, after)
			}
			return
		}

		// Accepted: the request was valid text with a valid key...
		if job.CheckJSONText(body) != nil || (useKey && !validKey(key)) {
			t.Fatalf("accepted body %q with key %q: %s", body, key, r)
		}
		checkNoReplacement(t, body, r)
		var reqs []enqueueRequest
		var jobs []httpapi.Job
		if batch {
			var req struct{ Jobs []enqueueRequest }
			var res struct{ Jobs []httpapi.Job }
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("accepted %q, which does not decode: %v", body, err)
			}
			if err := strictDecode(r.body, &res); err != nil {
				t.Fatalf("batch response does not decode: %v: %s", err, r)
			}
			reqs, jobs = req.Jobs, res.Jobs
		} else {
			var req enqueueRequest
			var res httpapi.Job
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("accepted %q, which does not decode: %v", body, err)
			}
			if err := strictDecode(r.body, &res); err != nil {
				t.Fatalf("response does not decode: %v: %s", err, r)
			}
			reqs, jobs = []enqueueRequest{req}, []httpapi.Job{res}
			if (r.status == http.StatusOK) != res.Duplicate {
				t.Fatalf("status %d with duplicate=%v", r.status, res.Duplicate)
			}
		}
		if len(jobs) != len(reqs) {
			t.Fatalf("%d jobs for %d requested", len(jobs), len(reqs))
		}

		// ...each job holds what was sent, and reads back the same...
		fresh := map[int64]bool{}
		for i, j := range jobs {
			rq := reqs[i]
			wantQueue := cmpOr(rq.Queue, job.DefaultQueue)
			if j.Kind != rq.Kind || j.Queue != wantQueue || string(j.Args) != compactOr(t, rq.Args, "null") {
				t.Fatalf("job %d is kind %q queue %q args %s; the request sent %q, %q, %s",
					i, j.Kind, j.Queue, j.Args, rq.Kind, rq.Queue, rq.Args)
			}
			got := api.do(t, http.MethodGet, "/v1/jobs/"+strconv.FormatInt(j.ID, 10), nil, nil)
			api.check(t, got)
			var stored httpapi.Job
			if got.status != http.StatusOK || strictDecode(got.body, &stored) != nil {
				t.Fatalf("GET job %d: %s", j.ID, got)
			}
			j.Duplicate = false
			if !jobsEqual(stored, j) {
				t.Fatalf("job %d reads back differently:\nenqueued %+v\nstored   %+v", j.ID, j, stored)
			}
			if j.ID > maxID {
				fresh[j.ID] = true
			}
		}

		// ...and exactly the new jobs were added: none when the key
		// replayed an earlier response.
		added := api.total(t) - total
		if added != len(fresh) {
			t.Fatalf("%d jobs added, %d new ids in the response %s", added, len(fresh), r)
		}
		if !useKey {
			return
		}
		// A retry with the same key and body answers the same and adds
		// nothing.
		again := api.do(t, http.MethodPost, path, hdr, body)
		api.check(t, again)
		if again.status != r.status || !jsonEqual(again.body, r.body) {
			t.Fatalf("retry with key %q answered\n%s\nthen\n%s", key, r, again)
		}
		if n := api.total(t) - total; n != added {
			t.Fatalf("retry with key %q added %d jobs", key, n-added)
		}
	})
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// jsonEqual reports whether two JSON texts hold equal values.
func jsonEqual(a, b []byte) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// jobsEqual compares two wire jobs by their JSON.
func jobsEqual(a, b httpapi.Job) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && jsonEqual(x, y)
}

func nestJSON(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
