package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	legacyrouter "github.com/getkin/kin-openapi/routers/legacy"
	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type clock = testenv.Clock

type leaseSpy = testenv.LeaseSpy

// config tunes one test's setup.
type config struct {
	engine engine.Config // Store and Now are filled in
	api    httpapi.Options
}

// bundle is one test's REST API over a fresh engine and embedded store,
// served on a loopback httptest server.
type bundle struct {
	t     *testing.T
	url   string
	http  *http.Client
	eng   *engine.Engine
	clock *clock
	spy   *leaseSpy
	api   *httpapi.API
	mux   *http.ServeMux
	spec  *spec
}

func setup(t *testing.T) *bundle { t.Helper(); return setupWith(t, config{}) }

func setupWith(t *testing.T, cfg config) *bundle {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	b := &bundle{
		t:     t,
		clock: testenv.NewClock(),
		spy:   testenv.NewLeaseSpy(st, 1),
		mux:   http.NewServeMux(),
	}
	cfg.engine.Store = b.spy
	cfg.engine.Now = b.clock.Now
	if cfg.engine.Logger == nil {
		cfg.engine.Logger = discardLogger()
	}
	b.eng, err = engine.New(cfg.engine)
	if err != nil {
		st.Close()
		t.Fatalf("engine.New: %v", err)
	}
	if cfg.api.Logger == nil {
		cfg.api.Logger = discardLogger()
	}
	b.api = httpapi.New(b.mux, b.eng, cfg.api)
	srv := httptest.NewServer(b.mux)
	b.url = srv.URL
	b.http = srv.Client() // its idle connections close with srv
	t.Cleanup(func() {
		srv.Close()
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	b.spec = loadSpec(t, b)
	return b
}

// withT returns b for use by subtest t: the same server, failing t.
func (b *bundle) withT(t *testing.T) *bundle {
	c := *b
	c.t = t
	return &c
}

// engineConfig is an engine configuration with limits.
func engineConfig(lim job.Limits) engine.Config { return engine.Config{Limits: lim} }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// response is one HTTP response, read in full.
type response struct {
	req    *http.Request
	status int
	header http.Header
	body   []byte
}

func (r *response) String() string {
	return r.header.Get("Content-Type") + " " + http.StatusText(r.status) + ": " + string(r.body)
}

// do sends a request with body (a string or []byte taken as is, anything
// else encoded as JSON) as application/json, and returns the response.
func (b *bundle) do(method, path string, body any) *response {
	b.t.Helper()
	return b.doCT(method, path, "application/json", body)
}

// doCT is do with a given Content-Type ("" sends none).
func (b *bundle) doCT(method, path, contentType string, body any) *response {
	b.t.Helper()
	return b.doCtx(b.t.Context(), method, path, contentType, body)
}

func (b *bundle) doCtx(ctx context.Context, method, path, contentType string, body any) *response {
	b.t.Helper()
	r, err := b.send(ctx, method, path, contentType, body)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	b.checkDocumented(r)
	return r
}

// checkDocumented checks r against the API's own OpenAPI document (see
// validateResponse). Every response a test gets through do is checked, so
// the whole suite keeps the document honest.
func (b *bundle) checkDocumented(r *response) {
	b.t.Helper()
	if err := b.validateResponse(r); err != nil {
		b.t.Errorf("%s %s: the response does not match the OpenAPI document: %v\nresponse: %s", r.req.Method, r.req.URL.Path, err, r)
	}
}

// validateResponse checks r against the API's own OpenAPI document: its
// status must be documented for the operation, and its body must match
// the documented schema. Responses to paths that are no operation of the
// document, such as /docs, pass.
func (b *bundle) validateResponse(r *response) error {
	b.t.Helper()
	route, params, err := b.spec.router.FindRoute(r.req)
	if err != nil {
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: r.req, PathParams: params, Route: route},
		Status:                 r.status,
		Header:                 r.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(r.body)
	return openapi3filter.ValidateResponse(context.Background(), in)
}

// spec is the served OpenAPI document, ready to validate responses.
type spec struct {
	raw    []byte
	doc    *openapi3.T
	router routers.Router
}

// loadSpec reads /openapi.json from b's server and validates it.
func loadSpec(t *testing.T, b *bundle) *spec {
	t.Helper()
	r, err := b.send(t.Context(), "GET", "/openapi.json", "", nil)
	if err != nil {
		t.Fatalf("GET /openapi.json: %v", err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("GET /openapi.json: %s", r)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(r.body)
	if err != nil {
		t.Fatalf("load /openapi.json: %v", err)
	}
	if err := doc.Validate(loader.Context); err != nil {
		t.Fatalf("/openapi.json is not a valid document: %v", err)
	}
	// kin-openapi checks 3.1 bodies with a JSON Schema 2020-12 validator,
	// but for schemas with $refs and no 2020-only keyword it falls back to
	// its own rules, which read a schema without a type (such as args, "any
	// JSON value") as refusing null, where 3.1 accepts any value. Spelling
	// out every type for those schemas makes the fallback give the 3.1
	// answer without loosening anything else.
	anyType := openapi3.Types{"null", "boolean", "object", "array", "number", "string", "integer"}
	err = doc.WalkSchemas(func(_ string, s *openapi3.SchemaRef) error {
		v := s.Value
		if (v.Type == nil || len(*v.Type) == 0) && len(v.AllOf)+len(v.AnyOf)+len(v.OneOf) == 0 && v.Not == nil {
			v.Type = &anyType
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk /openapi.json: %v", err)
	}
	// The routers match the request URL against the document's servers;
	// with none, a path alone matches.
	doc.Servers = nil
	router, err := legacyrouter.NewRouter(doc)
	if err != nil {
		t.Fatalf("router over /openapi.json: %v", err)
	}
	return &spec{raw: r.body, doc: doc, router: router}
}

// send is doCtx for goroutines other than the test's: it returns errors
// instead of failing the test.
func (b *bundle) send(ctx context.Context, method, path, contentType string, body any) (*response, error) {
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	case []byte:
		rd = bytes.NewReader(v)
	default:
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("encode request body: %w", err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	if err != nil {
		return nil, err
	}
	if rd != nil && contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := b.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	return &response{req: req, status: res.StatusCode, header: res.Header, body: raw}, nil
}

// wantStatus fails the test unless r has status.
func wantStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; response: %s", r.status, status, r)
	}
}

// decode decodes r's JSON body into a value of type T, after checking that
// r has status.
func decode[T any](t *testing.T, r *response, status int) T {
	t.Helper()
	wantStatus(t, r, status)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type = %q, want application/json; response: %s", ct, r)
	}
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	return v
}

// apiJob is a job as a client sees it.
type apiJob struct {
	ID          int64           `json:"id"`
	Kind        string          `json:"kind"`
	Queue       string          `json:"queue"`
	Args        json.RawMessage `json:"args"`
	Priority    int             `json:"priority"`
	State       string          `json:"state"`
	Attempt     int             `json:"attempt"`
	MaxAttempts int             `json:"max_attempts"`
	Timeout     string          `json:"timeout"`
	UniqueKey   string          `json:"unique_key"`
	Tags        []string        `json:"tags"`
	Metadata    json.RawMessage `json:"metadata"`
	DependsOn   []int64         `json:"depends_on"`
	Output      json.RawMessage `json:"output"`
	Errors      []struct {
		Attempt int       `json:"attempt"`
		At      time.Time `json:"at"`
		Message string    `json:"message"`
		Detail  string    `json:"detail"`
	} `json:"errors"`
	CreatedAt   time.Time  `json:"created_at"`
	ScheduledAt time.Time  `json:"scheduled_at"`
	AttemptedAt *time.Time `json:"attempted_at"`
	FinalizedAt *time.Time `json:"finalized_at"`
	AttemptedBy string     `json:"attempted_by"`
	LeaseToken  string     `json:"lease_token"`
	LeaseExpiry *time.Time `json:"lease_expires_at"`
	Duplicate   bool       `json:"duplicate"`
}

type jobList struct {
	Jobs       []apiJob `json:"jobs"`
	NextCursor string   `json:"next_cursor"`
}

// problem is an error body as a client sees it.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
	Errors []struct {
		Message  string `json:"message"`
		Location string `json:"location"`
	} `json:"errors"`
}

// wantProblem checks that r is a problem details response with status and
// code, with every required field consistent, and returns it.
func wantProblem(t *testing.T, r *response, status int, code string) problem {
	t.Helper()
	wantStatus(t, r, status)
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json; response: %s", ct, r)
	}
	var p problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("decode problem %s: %v", r, err)
	}
	if p.Code != code {
		t.Errorf("code = %q, want %q; response: %s", p.Code, code, r)
	}
	if want := "urn:drover:problem:" + code; p.Type != want {
		t.Errorf("type = %q, want %q", p.Type, want)
	}
	if want := http.StatusText(status); p.Title != want {
		t.Errorf("title = %q, want %q", p.Title, want)
	}
	if p.Status != status {
		t.Errorf("status field = %d, want %d", p.Status, status)
	}
	return p
}

// wantLocation checks that p names loc among its errors.
func wantLocation(t *testing.T, p problem, loc string) {
	t.Helper()
	var got []string
	for _, e := range p.Errors {
		if e.Location == loc {
			return
		}
		got = append(got, e.Location)
	}
	t.Errorf("errors[].location = %q, want one to be %q", got, loc)
}

// enqueue enqueues body and returns the new job.
func (b *bundle) enqueue(body any) apiJob {
	b.t.Helper()
	return decode[apiJob](b.t, b.do("POST", "/v1/jobs", body), http.StatusCreated)
}

// lease leases from queues (at most max jobs, no wait).
func (b *bundle) lease(max int, queues ...string) []apiJob {
	b.t.Helper()
	r := b.do("POST", "/v1/lease", map[string]any{"queues": queues, "max": max})
	return decode[jobList](b.t, r, http.StatusOK).Jobs
}

// leaseOne leases the one available job of queue, failing the test when
// there is none.
func (b *bundle) leaseOne(queue string) apiJob {
	b.t.Helper()
	jobs := b.lease(1, queue)
	if len(jobs) != 1 {
		b.t.Fatalf("lease from %q got %d jobs, want 1", queue, len(jobs))
	}
	return jobs[0]
}

// get returns job id via GET.
func (b *bundle) get(id int64) apiJob {
	b.t.Helper()
	return decode[apiJob](b.t, b.do("GET", jobPath(id, ""), nil), http.StatusOK)
}

func jobPath(id int64, action string) string {
	p := "/v1/jobs/" + strconv.FormatInt(id, 10)
	if action != "" {
		p += "/" + action
	}
	return p
}
