package server_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/errcode"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// The behavioural scenarios of the API, run through every face from one
// table (faceCases) against one real server on a loopback socket. Each
// face turns its answers into the same neutral outcome, and the test
// checks that every face gives the transcript the case expects, stable
// error codes included, and that each face's own status for a code (HTTP
// status, gRPC code) is the one the shared error table (errcode) gives.
// GraphQL is the third face: its errors carry the code in
// extensions.code, in a 200 response.

// failHow says how a fail settles the job besides recording the error.
type failHow struct {
	discard, cancel bool
}

// outcome is a face's answer in neutral terms.
type outcome struct {
	// code is the stable error code, empty on success.
	code string
	jobs []jobView
	// paused is a queue's flag, for queue calls.
	paused bool
}

// jobView is what the scenarios compare of a job.
type jobView struct {
	id         int64
	state      string
	attempt    int
	duplicate  bool
	args       string // canonical JSON
	leaseToken string
}

func (o outcome) job() jobView {
	if len(o.jobs) == 0 {
		return jobView{}
	}
	return o.jobs[0]
}

// enqueueArgs is an enqueue in neutral terms.
type enqueueArgs struct {
	kind, queue, args, uniqueKey string
	priority                     int
}

// face is one way of calling the API. Every method takes the bearer
// token to send ("" for none).
type face interface {
	name() string
	enqueue(t *testing.T, token string, e enqueueArgs) outcome
	lease(t *testing.T, token, queue string) outcome
	complete(t *testing.T, token string, id int64, leaseToken string) outcome
	fail(t *testing.T, token string, id int64, leaseToken string, how failHow) outcome
	retry(t *testing.T, token string, id int64) outcome
	get(t *testing.T, token string, id int64) outcome
	setPaused(t *testing.T, token, queue string, paused bool) outcome
}

// tokens holds a token of each scope.
type tokens map[auth.Scope]string

// scenario is what a case runs: its steps in a face, against queue (one
// of its own), returning one line per step.
type scenario func(t *testing.T, f face, tok tokens, queue string) []string

// line renders an outcome for the transcript: the stable code of an
// error, or what the scenario can predict of a success.
func line(step string, o outcome) string {
	if o.code != "" {
		return step + ": " + o.code
	}
	if len(o.jobs) == 0 {
		return step + ": ok, no job"
	}
	j := o.job()
	s := fmt.Sprintf("%s: ok, %s attempt %d", step, j.state, j.attempt)
	if j.duplicate {
		s += " duplicate"
	}
	return s
}

var faceCases = []struct {
	name string
	run  scenario
	want []string
}{
	{
		name: "enqueue",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			const args = `{"to":"a@example.com","n":3,"list":[1,"x",null,true]}`
			o := f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q, args: args})
			if !sameJSON(t, o.job().args, args) {
				t.Errorf("%s: args = %s, want %s", f.name(), o.job().args, args)
			}
			g := f.get(t, tok[auth.ScopeRead], o.job().id)
			if g.job().id != o.job().id {
				t.Errorf("%s: get returned job %d, want %d", f.name(), g.job().id, o.job().id)
			}
			return []string{line("enqueue", o), line("get", g)}
		},
		want: []string{"enqueue: ok, available attempt 0", "get: ok, available attempt 0"},
	},
	{
		name: "lease and complete",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			e := f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q})
			l := f.lease(t, tok[auth.ScopeWorker], q)
			if l.job().id != e.job().id || l.job().leaseToken == "" {
				t.Errorf("%s: leased %+v, want job %d with a lease token", f.name(), l.job(), e.job().id)
			}
			c := f.complete(t, tok[auth.ScopeWorker], l.job().id, l.job().leaseToken)
			empty := f.lease(t, tok[auth.ScopeWorker], q)
			return []string{line("enqueue", e), line("lease", l), line("complete", c), line("lease again", empty)}
		},
		want: []string{"enqueue: ok, available attempt 0", "lease: ok, running attempt 1", "complete: ok, completed attempt 1", "lease again: ok, no job"},
	},
	{
		name: "stale token refused",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q})
			l := f.lease(t, tok[auth.ScopeWorker], q).job()
			stale := f.complete(t, tok[auth.ScopeWorker], l.id, "not-the-token")
			staleFail := f.fail(t, tok[auth.ScopeWorker], l.id, "not-the-token", failHow{})
			ok := f.complete(t, tok[auth.ScopeWorker], l.id, l.leaseToken)
			again := f.complete(t, tok[auth.ScopeWorker], l.id, l.leaseToken)
			return []string{line("complete with a wrong token", stale), line("fail with a wrong token", staleFail),
				line("complete", ok), line("complete repeated", again)}
		},
		want: []string{"complete with a wrong token: lease_lost", "fail with a wrong token: lease_lost",
			"complete: ok, completed attempt 1", "complete repeated: ok, completed attempt 1"},
	},
	{
		name: "fail and retry",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q})
			l := f.lease(t, tok[auth.ScopeWorker], q).job()
			failed := f.fail(t, tok[auth.ScopeWorker], l.id, l.leaseToken, failHow{})
			l2 := f.lease(t, tok[auth.ScopeWorker], q)
			discarded := f.fail(t, tok[auth.ScopeWorker], l.id, l2.job().leaseToken, failHow{discard: true})
			retried := f.retry(t, tok[auth.ScopeAdmin], l.id)
			return []string{line("fail", failed), line("lease", l2), line("fail with discard", discarded), line("retry", retried)}
		},
		want: []string{"fail: ok, available attempt 1", "lease: ok, running attempt 2",
			"fail with discard: ok, discarded attempt 2", "retry: ok, available attempt 2"},
	},
	{
		name: "fail with cancel",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q})
			l := f.lease(t, tok[auth.ScopeWorker], q).job()
			both := f.fail(t, tok[auth.ScopeWorker], l.id, l.leaseToken, failHow{discard: true, cancel: true})
			cancelled := f.fail(t, tok[auth.ScopeWorker], l.id, l.leaseToken, failHow{cancel: true})
			return []string{line("fail with discard and cancel", both), line("fail with cancel", cancelled)}
		},
		want: []string{"fail with discard and cancel: invalid_argument", "fail with cancel: ok, cancelled attempt 1"},
	},
	{
		name: "unique duplicate",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			e := enqueueArgs{kind: "k." + q, queue: q, uniqueKey: "once"}
			first := f.enqueue(t, tok[auth.ScopeProducer], e)
			dup := f.enqueue(t, tok[auth.ScopeProducer], e)
			if dup.job().id != first.job().id {
				t.Errorf("%s: duplicate is job %d, want the first, %d", f.name(), dup.job().id, first.job().id)
			}
			return []string{line("enqueue", first), line("enqueue again", dup)}
		},
		want: []string{"enqueue: ok, available attempt 0", "enqueue again: ok, available attempt 0 duplicate"},
	},
	{
		name: "pause",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			p := f.setPaused(t, tok[auth.ScopeAdmin], q, true)
			f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q})
			l := f.lease(t, tok[auth.ScopeWorker], q)
			r := f.setPaused(t, tok[auth.ScopeAdmin], q, false)
			l2 := f.lease(t, tok[auth.ScopeWorker], q)
			return []string{fmt.Sprintf("pause: paused %t", p.paused), line("lease while paused", l),
				fmt.Sprintf("resume: paused %t", r.paused), line("lease", l2)}
		},
		want: []string{"pause: paused true", "lease while paused: ok, no job", "resume: paused false", "lease: ok, running attempt 1"},
	},
	{
		name: "not found",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			return []string{
				line("get", f.get(t, tok[auth.ScopeRead], 1<<40)),
				line("complete", f.complete(t, tok[auth.ScopeWorker], 1<<40, "token")),
				line("retry", f.retry(t, tok[auth.ScopeAdmin], 1<<40)),
			}
		},
		want: []string{"get: not_found", "complete: not_found", "retry: not_found"},
	},
	{
		name: "invalid argument",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			return []string{
				line("bad kind", f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "bad kind", queue: q})),
				line("bad priority", f.enqueue(t, tok[auth.ScopeProducer], enqueueArgs{kind: "k", queue: q, priority: 42})),
				line("bad queue", f.lease(t, tok[auth.ScopeWorker], "no spaces")),
			}
		},
		want: []string{"bad kind: invalid_argument", "bad priority: invalid_argument", "bad queue: invalid_argument"},
	},
	{
		name: "unauthenticated",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			return []string{
				line("no token", f.enqueue(t, "", enqueueArgs{kind: "k", queue: q})),
				line("not a token", f.get(t, "hello", 1)),
				line("wrong secret", f.lease(t, tok[auth.ScopeWorker]+"x", q)),
			}
		},
		want: []string{"no token: unauthorized", "not a token: unauthorized", "wrong secret: unauthorized"},
	},
	{
		name: "forbidden",
		run: func(t *testing.T, f face, tok tokens, q string) []string {
			return []string{
				line("read token enqueues", f.enqueue(t, tok[auth.ScopeRead], enqueueArgs{kind: "k", queue: q})),
				line("producer token leases", f.lease(t, tok[auth.ScopeProducer], q)),
				line("worker token pauses", f.setPaused(t, tok[auth.ScopeWorker], q, true)),
			}
		},
		want: []string{"read token enqueues: forbidden", "producer token leases: forbidden", "worker token pauses: forbidden"},
	},
}

// TestFacesAgree runs every scenario through REST, gRPC and GraphQL
// against one server on the embedded store, with tokens enforced.
func TestFacesAgree(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tok := makeTokens(t, st)
	st.Close()
	runFaces(t, cfg, tok)
}

// TestFacesAgreePostgres is TestFacesAgree on a PostgreSQL node.
func TestFacesAgreePostgres(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = pgtest.TestURL(t)
	cfg.DatabaseSchema = pgtest.TestSchema(t, cfg.DatabaseURL)
	st, err := pgstore.Open(t.Context(), cfg.DatabaseURL, pgstore.Options{Schema: cfg.DatabaseSchema, NodeID: "tokens"})
	if err != nil {
		t.Fatal(err)
	}
	tok := makeTokens(t, st)
	st.Close()
	runFaces(t, cfg, tok)
}

func runFaces(t *testing.T, cfg config.Config, tok tokens) {
	t.Helper()
	r := serve(t, cfg)
	faces := []face{newRESTFace(t, r.url), newGRPCFace(t, r.url), newGraphQLFace(t, r.url)}
	for _, tc := range faceCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, f := range faces {
				q := strings.ReplaceAll(tc.name, " ", "-") + "." + f.name()
				got := tc.run(t, f, tok, q)
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s:\n got  %q\n want %q", f.name(), got, tc.want)
				}
			}
		})
	}
}

// makeTokens creates a token of each scope in st (authtest's), as
// `drover token create` does.
func makeTokens(t *testing.T, st store.Store) tokens {
	t.Helper()
	creds := authtest.NewCredentials(t, st)
	out := tokens{}
	for _, sc := range auth.Scopes {
		out[sc] = creds[authtest.Credential(sc)]
	}
	return out
}

// restFace calls the REST API with plain HTTP/1.1 and JSON.
type restFace struct {
	url    string
	client *http.Client
}

func newRESTFace(t *testing.T, url string) *restFace {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &restFace{url: url, client: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

func (*restFace) name() string { return "rest" }

// restJob is the part of a REST job the scenarios read.
type restJob struct {
	ID         int64           `json:"id"`
	State      string          `json:"state"`
	Attempt    int             `json:"attempt"`
	Duplicate  bool            `json:"duplicate"`
	Args       json.RawMessage `json:"args"`
	LeaseToken string          `json:"lease_token"`
}

func (j restJob) view() jobView {
	return jobView{id: j.ID, state: j.State, attempt: j.Attempt, duplicate: j.Duplicate, args: string(j.Args), leaseToken: j.LeaseToken}
}

// do sends one request and decodes a success into out; a failure becomes
// its problem's code, after checking that its status is the table's.
func (f *restFace) do(t *testing.T, method, path, token string, body any, out any) string {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, f.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode >= 400 {
		var p struct {
			Code string `json:"code"`
		}
		if err := json.Unmarshal(raw, &p); err != nil || p.Code == "" {
			t.Fatalf("%s %s: %d with body %s: not a problem with a code", method, path, resp.StatusCode, raw)
		}
		// REST answers schema violations (huma's) 400 or 422 alike;
		// errors from the engine and the token check follow the table.
		schema400 := p.Code == "invalid_argument" && resp.StatusCode == http.StatusBadRequest
		if want := errcode.Lookup(p.Code).HTTPStatus; resp.StatusCode != want && !schema400 {
			t.Errorf("%s %s: status %d for code %s, the error table says %d", method, path, resp.StatusCode, p.Code, want)
		}
		return p.Code
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return ""
}

func (f *restFace) oneJob(t *testing.T, method, path, token string, body any) outcome {
	t.Helper()
	var j restJob
	if code := f.do(t, method, path, token, body, &j); code != "" {
		return outcome{code: code}
	}
	return outcome{jobs: []jobView{j.view()}}
}

func (f *restFace) enqueue(t *testing.T, token string, e enqueueArgs) outcome {
	body := map[string]any{"kind": e.kind, "queue": e.queue}
	if e.args != "" {
		body["args"] = json.RawMessage(e.args)
	}
	if e.priority != 0 {
		body["priority"] = e.priority
	}
	if e.uniqueKey != "" {
		body["unique"] = map[string]any{"key": e.uniqueKey}
	}
	return f.oneJob(t, http.MethodPost, "/v1/jobs", token, body)
}

func (f *restFace) lease(t *testing.T, token, queue string) outcome {
	var out struct {
		Jobs []restJob `json:"jobs"`
	}
	if code := f.do(t, http.MethodPost, "/v1/lease", token, map[string]any{"queues": []string{queue}}, &out); code != "" {
		return outcome{code: code}
	}
	o := outcome{}
	for _, j := range out.Jobs {
		o.jobs = append(o.jobs, j.view())
	}
	return o
}

func (f *restFace) complete(t *testing.T, token string, id int64, leaseToken string) outcome {
	return f.oneJob(t, http.MethodPost, "/v1/jobs/"+strconv.FormatInt(id, 10)+"/complete", token, map[string]any{"lease_token": leaseToken})
}

func (f *restFace) fail(t *testing.T, token string, id int64, leaseToken string, how failHow) outcome {
	return f.oneJob(t, http.MethodPost, "/v1/jobs/"+strconv.FormatInt(id, 10)+"/fail", token,
		map[string]any{"lease_token": leaseToken, "error": "boom", "retry_in": "0s", "discard": how.discard, "cancel": how.cancel})
}

func (f *restFace) retry(t *testing.T, token string, id int64) outcome {
	return f.oneJob(t, http.MethodPost, "/v1/jobs/"+strconv.FormatInt(id, 10)+"/retry", token, nil)
}

func (f *restFace) get(t *testing.T, token string, id int64) outcome {
	return f.oneJob(t, http.MethodGet, "/v1/jobs/"+strconv.FormatInt(id, 10), token, nil)
}

func (f *restFace) setPaused(t *testing.T, token, queue string, paused bool) outcome {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	var q struct {
		Paused bool `json:"paused"`
	}
	if code := f.do(t, http.MethodPost, "/v1/queues/"+queue+"/"+verb, token, nil, &q); code != "" {
		return outcome{code: code}
	}
	return outcome{paused: q.Paused}
}

// grpcFace calls the gRPC face with Connect's client speaking the gRPC
// protocol over HTTP/2 without TLS (h2c): what a grpc-go client sends.
type grpcFace struct {
	jobs    droverv1connect.JobServiceClient
	workers droverv1connect.WorkerServiceClient
	queues  droverv1connect.QueueServiceClient
}

// h2cClient is an HTTP client that speaks only unencrypted HTTP/2.
func h2cClient(t *testing.T) *http.Client {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newGRPCFace(t *testing.T, url string) *grpcFace {
	c := h2cClient(t)
	return &grpcFace{
		jobs:    droverv1connect.NewJobServiceClient(c, url, connect.WithGRPC()),
		workers: droverv1connect.NewWorkerServiceClient(c, url, connect.WithGRPC()),
		queues:  droverv1connect.NewQueueServiceClient(c, url, connect.WithGRPC()),
	}
}

func (*grpcFace) name() string { return "grpc" }

func request[T any](token string, msg *T) *connect.Request[T] {
	req := connect.NewRequest(msg)
	if token != "" {
		req.Header().Set("Authorization", "Bearer "+token)
	}
	return req
}

// grpcCode returns the stable code of a gRPC error, after checking that
// its gRPC code is the table's and that the code travels both as an
// ErrorInfo detail and as metadata.
func grpcCode(t *testing.T, err error) string {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("not a Connect error: %v", err)
	}
	code := ce.Meta().Get(grpcapi.CodeHeader)
	var reason string
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == grpcapi.ErrorDomain {
				reason = info.GetReason()
			}
		}
	}
	if code == "" || reason != code {
		t.Fatalf("error %v: code %q in metadata, %q in ErrorInfo; want the same stable code in both", err, code, reason)
	}
	if want := errcode.Lookup(code).GRPC; ce.Code() != want {
		t.Errorf("error %v: gRPC code %s for %s, the error table says %s", err, ce.Code(), code, want)
	}
	return code
}

func grpcJob(j *droverv1.Job) jobView {
	args, _ := j.GetArgs().MarshalJSON()
	return jobView{
		id: j.GetId(), state: strings.ToLower(strings.TrimPrefix(j.GetState().String(), "JOB_STATE_")),
		attempt: int(j.GetAttempt()), duplicate: j.GetDuplicate(), args: compactJSON(args), leaseToken: j.GetLeaseToken(),
	}
}

// sameJSON reports whether two JSON texts hold the same value (object
// keys in any order).
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(va, vb)
}

// compactJSON removes the white space protojson adds at random.
func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

func grpcOne[R any, P interface {
	*R
	GetJob() *droverv1.Job
}](t *testing.T, res *connect.Response[R], err error) outcome {
	t.Helper()
	if err != nil {
		return outcome{code: grpcCode(t, err)}
	}
	return outcome{jobs: []jobView{grpcJob(P(res.Msg).GetJob())}}
}

func (f *grpcFace) enqueue(t *testing.T, token string, e enqueueArgs) outcome {
	req := &droverv1.EnqueueRequest{Kind: e.kind, Queue: e.queue, Priority: int32(e.priority)} //nolint:gosec // small test values
	if e.args != "" {
		req.Args = &structpb.Value{}
		if err := req.Args.UnmarshalJSON([]byte(e.args)); err != nil {
			t.Fatal(err)
		}
	}
	if e.uniqueKey != "" {
		req.Unique = &droverv1.UniqueOptions{Key: e.uniqueKey}
	}
	res, err := f.jobs.Enqueue(t.Context(), request(token, req))
	return grpcOne(t, res, err)
}

func (f *grpcFace) lease(t *testing.T, token, queue string) outcome {
	res, err := f.workers.Lease(t.Context(), request(token, &droverv1.LeaseRequest{Queues: []string{queue}}))
	if err != nil {
		return outcome{code: grpcCode(t, err)}
	}
	o := outcome{}
	for _, j := range res.Msg.GetJobs() {
		o.jobs = append(o.jobs, grpcJob(j))
	}
	return o
}

func (f *grpcFace) complete(t *testing.T, token string, id int64, leaseToken string) outcome {
	res, err := f.workers.Complete(t.Context(), request(token, &droverv1.CompleteRequest{Id: id, LeaseToken: leaseToken}))
	return grpcOne(t, res, err)
}

func (f *grpcFace) fail(t *testing.T, token string, id int64, leaseToken string, how failHow) outcome {
	res, err := f.workers.Fail(t.Context(), request(token, &droverv1.FailRequest{
		Id: id, LeaseToken: leaseToken, Error: "boom", RetryIn: durationpb.New(0), Discard: how.discard, Cancel: how.cancel,
	}))
	return grpcOne(t, res, err)
}

func (f *grpcFace) retry(t *testing.T, token string, id int64) outcome {
	res, err := f.jobs.RetryJob(t.Context(), request(token, &droverv1.RetryJobRequest{Id: id}))
	return grpcOne(t, res, err)
}

func (f *grpcFace) get(t *testing.T, token string, id int64) outcome {
	res, err := f.jobs.GetJob(t.Context(), request(token, &droverv1.GetJobRequest{Id: id}))
	return grpcOne(t, res, err)
}

func (f *grpcFace) setPaused(t *testing.T, token, queue string, paused bool) outcome {
	var q *droverv1.Queue
	var err error
	if paused {
		var res *connect.Response[droverv1.PauseQueueResponse]
		res, err = f.queues.PauseQueue(t.Context(), request(token, &droverv1.PauseQueueRequest{Name: queue}))
		if err == nil {
			q = res.Msg.GetQueue()
		}
	} else {
		var res *connect.Response[droverv1.ResumeQueueResponse]
		res, err = f.queues.ResumeQueue(t.Context(), request(token, &droverv1.ResumeQueueRequest{Name: queue}))
		if err == nil {
			q = res.Msg.GetQueue()
		}
	}
	if err != nil {
		return outcome{code: grpcCode(t, err)}
	}
	return outcome{paused: q.GetPaused()}
}

// graphqlFace calls the GraphQL face with POST application/json over
// HTTP/1.1, as curl and browsers do.
type graphqlFace struct{ c *gqlClient }

func newGraphQLFace(t *testing.T, url string) *graphqlFace {
	return &graphqlFace{c: newGQLClient(t, url)}
}

func (*graphqlFace) name() string { return "graphql" }

// gqlJobFields is the selection of a job that the scenarios read.
const gqlJobFields = "fragment J on Job { id state attempt duplicate args lease_token }"

// gqlJob is the part of a GraphQL job the scenarios read.
type gqlJob struct {
	ID         string          `json:"id"`
	State      string          `json:"state"`
	Attempt    int             `json:"attempt"`
	Duplicate  bool            `json:"duplicate"`
	Args       json.RawMessage `json:"args"`
	LeaseToken *string         `json:"lease_token"`
}

func (j gqlJob) view(t *testing.T) jobView {
	t.Helper()
	id, err := strconv.ParseInt(j.ID, 10, 64)
	if err != nil {
		t.Fatalf("job id %q: %v", j.ID, err)
	}
	v := jobView{id: id, state: j.State, attempt: j.Attempt, duplicate: j.Duplicate, args: compactJSON(j.Args)}
	if j.LeaseToken != nil {
		v.leaseToken = *j.LeaseToken
	}
	return v
}

// jobs runs an operation whose one root field answers a job or a list of
// jobs, and turns the answer into an outcome.
func (f *graphqlFace) jobs(t *testing.T, token, field, query string, vars map[string]any) outcome {
	t.Helper()
	res := f.c.do(t, token, query+"\n"+gqlJobFields, vars)
	if code := res.code(t); code != "" {
		return outcome{code: code}
	}
	raw := res.Data[field]
	var list []gqlJob
	if len(raw) > 0 && raw[0] == '[' {
		if err := json.Unmarshal(raw, &list); err != nil {
			t.Fatalf("%s: %s: %v", field, raw, err)
		}
	} else {
		var one gqlJob
		if err := json.Unmarshal(raw, &one); err != nil {
			t.Fatalf("%s: %s: %v", field, raw, err)
		}
		list = []gqlJob{one}
	}
	o := outcome{}
	for _, j := range list {
		o.jobs = append(o.jobs, j.view(t))
	}
	return o
}

func (f *graphqlFace) enqueue(t *testing.T, token string, e enqueueArgs) outcome {
	in := map[string]any{"kind": e.kind, "queue": e.queue}
	if e.args != "" {
		in["args"] = json.RawMessage(e.args)
	}
	if e.priority != 0 {
		in["priority"] = e.priority
	}
	if e.uniqueKey != "" {
		in["unique"] = map[string]any{"key": e.uniqueKey}
	}
	return f.jobs(t, token, "enqueue", "mutation($in: EnqueueInput!) { enqueue(input: $in) { ...J } }", map[string]any{"in": in})
}

func (f *graphqlFace) lease(t *testing.T, token, queue string) outcome {
	return f.jobs(t, token, "leaseJobs", "mutation($q: [String!]!) { leaseJobs(input: {queues: $q}) { ...J } }", map[string]any{"q": []string{queue}})
}

func (f *graphqlFace) complete(t *testing.T, token string, id int64, leaseToken string) outcome {
	return f.jobs(t, token, "completeJob", "mutation($id: ID!, $t: String!) { completeJob(id: $id, lease_token: $t) { ...J } }",
		map[string]any{"id": strconv.FormatInt(id, 10), "t": leaseToken})
}

func (f *graphqlFace) fail(t *testing.T, token string, id int64, leaseToken string, how failHow) outcome {
	return f.jobs(t, token, "failJob", "mutation($in: FailInput!) { failJob(input: $in) { ...J } }", map[string]any{"in": map[string]any{
		"id": strconv.FormatInt(id, 10), "lease_token": leaseToken, "error": "boom", "retry_in": "0s", "discard": how.discard, "cancel": how.cancel,
	}})
}

func (f *graphqlFace) retry(t *testing.T, token string, id int64) outcome {
	return f.jobs(t, token, "retryJob", "mutation($id: ID!) { retryJob(id: $id) { ...J } }", map[string]any{"id": strconv.FormatInt(id, 10)})
}

func (f *graphqlFace) get(t *testing.T, token string, id int64) outcome {
	return f.jobs(t, token, "job", "query($id: ID!) { job(id: $id) { ...J } }", map[string]any{"id": strconv.FormatInt(id, 10)})
}

func (f *graphqlFace) setPaused(t *testing.T, token, queue string, paused bool) outcome {
	field := "resumeQueue"
	if paused {
		field = "pauseQueue"
	}
	res := f.c.do(t, token, "mutation($n: String!) { "+field+"(name: $n) { paused } }", map[string]any{"n": queue})
	if code := res.code(t); code != "" {
		return outcome{code: code}
	}
	var q struct {
		Paused bool `json:"paused"`
	}
	if err := json.Unmarshal(res.Data[field], &q); err != nil {
		t.Fatalf("%s: %s: %v", field, res.Data[field], err)
	}
	return outcome{paused: q.Paused}
}
