package grpcapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"google.golang.org/protobuf/proto"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is the gRPC face over an engine on a fresh embedded store,
// served with h2c on a loopback socket.
type harness struct {
	eng    *engine.Engine
	url    string
	client *http.Client
}

func newHarness(t *testing.T, cfg engine.Config) *harness {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Store = st
	cfg.Logger = slog.New(slog.DiscardHandler)
	eng, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	grpcapi.New(eng, grpcapi.Options{Logger: cfg.Logger}).Mount(mux)
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	hs := &http.Server{Handler: mux, Protocols: p, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln) //nolint:errcheck // ends with Close
	cp := new(http.Protocols)
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: cp}
	t.Cleanup(func() {
		eng.StopWaiting() // ends streams, so that Close finds no handler
		tr.CloseIdleConnections()
		hs.Close()
	})
	return &harness{eng: eng, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr}}
}

func (h *harness) waitSubscribers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.eng.Subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers after 30s, want %d", h.eng.Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSlowSubscriberIsDropped subscribes with a client that reads nothing
// while a burst of events far larger than the subscriber's buffer is
// published: the stream ends with RESOURCE_EXHAUSTED and the documented
// reason, the engine forgets the subscriber, and the server's heap does
// not grow with the events published after the drop.
func TestSlowSubscriberIsDropped(t *testing.T) {
	t.Parallel()
	const buffer = 8
	h := newHarness(t, engine.Config{EventBuffer: buffer})
	events := droverv1connect.NewEventServiceClient(h.client, h.url, connect.WithGRPC())
	stream, err := events.Subscribe(t.Context(), connect.NewRequest(&droverv1.SubscribeRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	h.waitSubscribers(t, 1)

	// One batch publishes its 10,000 events in one tight loop, far faster
	// than the stream can send them: the buffer of 8 overflows.
	specs := make([]job.Spec, 10_000)
	for i := range specs {
		specs[i] = job.Spec{Kind: "k"}
	}
	if _, err := h.eng.Enqueue(t.Context(), specs...); err != nil {
		t.Fatal(err)
	}
	h.waitSubscribers(t, 0)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 2 {
		if _, err := h.eng.Enqueue(t.Context(), specs...); err != nil {
			t.Fatal(err)
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	// 20,000 more events were published; kept, they would hold over
	// 2 MiB. Dropped, the live heap stays where it was (give or take the
	// store's caches).
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 4<<20 { //nolint:gosec // heap sizes fit int64
		t.Errorf("live heap grew by %d bytes after the subscriber was dropped", grew)
	}

	received := 0
	for stream.Receive() {
		received++
	}
	err = stream.Err()
	if connect.CodeOf(err) != connect.CodeResourceExhausted || !strings.Contains(err.Error(), "subscriber too slow: ") || !strings.Contains(err.Error(), " events behind") {
		t.Fatalf("stream ended with %v after %d events; want RESOURCE_EXHAUSTED, subscriber too slow: N events behind", err, received)
	}
	if received >= 10_000 {
		t.Fatalf("received all %d events of the burst; the subscriber was not dropped for falling behind", received)
	}
}

func TestSubscribeFilterValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	events := droverv1connect.NewEventServiceClient(h.client, h.url, connect.WithGRPC())
	for name, req := range map[string]*droverv1.SubscribeRequest{
		"queue": {Queue: []string{"no spaces"}},
		"state": {State: []droverv1.JobState{99}},
	} {
		stream, err := events.Subscribe(t.Context(), connect.NewRequest(req))
		if err != nil {
			t.Fatal(err)
		}
		for stream.Receive() {
			t.Errorf("%s: an event on an invalid subscription", name)
		}
		if connect.CodeOf(stream.Err()) != connect.CodeInvalidArgument {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, stream.Err())
		}
		stream.Close()
	}
}

// TestEveryProcedureHasAnOperation checks the scope table covers the
// contract: every method of every drover.v1 service maps to an auth
// operation, so that none falls back to needing admin by omission.
func TestEveryProcedureHasAnOperation(t *testing.T) {
	t.Parallel()
	files := []protoreflect.FileDescriptor{
		droverv1.File_drover_v1_job_service_proto, droverv1.File_drover_v1_worker_service_proto,
		droverv1.File_drover_v1_queue_service_proto, droverv1.File_drover_v1_event_service_proto,
	}
	n := 0
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				proc := "/" + string(svc.FullName()) + "/" + string(svc.Methods().Get(j).Name())
				op, ok := grpcapi.Operation(proc)
				if !ok {
					t.Errorf("%s has no auth operation", proc)
				}
				if op.Scope() == "" {
					t.Errorf("%s: operation %q has no scope", proc, op)
				}
				n++
			}
		}
	}
	if n != 17 {
		t.Fatalf("checked %d procedures, want the 17 of the contract", n)
	}
	// The same operation needs the same scope in every face.
	for proc, want := range map[string]auth.Scope{
		droverv1connect.JobServiceEnqueueProcedure:      auth.ScopeProducer,
		droverv1connect.WorkerServiceCompleteProcedure:  auth.ScopeWorker,
		droverv1connect.JobServiceListJobsProcedure:     auth.ScopeRead,
		droverv1connect.QueueServicePauseQueueProcedure: auth.ScopeAdmin,
		droverv1connect.EventServiceSubscribeProcedure:  auth.ScopeRead,
	} {
		if op, _ := grpcapi.Operation(proc); op.Scope() != want {
			t.Errorf("%s needs %s, want %s", proc, op.Scope(), want)
		}
	}
}

// TestArgsTravelAsJSON checks the Connect JSON codec: args are plain JSON
// on the wire, and what the engine stores is the normalized JSON. A large
// integer shows the documented trade-off: it travels as a double.
func TestArgsTravelAsJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	jobs := droverv1connect.NewJobServiceClient(h.client, h.url, connect.WithProtoJSON())
	args, err := structpb.NewValue(map[string]any{"b": []any{1.5, "x", nil, true}, "a": map[string]any{"big": float64(1<<53 + 1)}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", Args: args}))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := h.eng.Get(t.Context(), job.ID(res.Msg.GetJob().GetId()))
	if err != nil {
		t.Fatal(err)
	}
	// 2^53+1 is not a double: it arrives as 2^53.
	if want := `{"a":{"big":9007199254740992},"b":[1.5,"x",null,true]}`; string(stored.Args) != want {
		t.Fatalf("stored args %s, want %s", stored.Args, want)
	}
	// No args is null, as in REST.
	res, err = jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, isNull := res.Msg.GetJob().GetArgs().GetKind().(*structpb.Value_NullValue); !isNull {
		t.Fatalf("args of a job enqueued without args: %v, want null", res.Msg.GetJob().GetArgs())
	}
}

// TestConnectJSON calls the face as a plain HTTP client would, with the
// Connect protocol's JSON: fields have REST's names both ways, args are
// plain JSON, and a field the contract does not know is refused.
func TestConnectJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	plain := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	defer plain.CloseIdleConnections()
	post := func(body string) (int, map[string]any) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+droverv1connect.JobServiceEnqueueProcedure, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out
	}
	status, out := post(`{"kind":"k","args":{"n":[1,2]},"max_attempts":3}`)
	j, _ := out["job"].(map[string]any)
	if status != http.StatusOK || j["max_attempts"] != float64(3) || j["state"] != "JOB_STATE_AVAILABLE" {
		t.Fatalf("enqueue = %d %v; want 200 with max_attempts 3", status, out)
	}
	if args, _ := json.Marshal(j["args"]); string(args) != `{"n":[1,2]}` {
		t.Fatalf("args on the wire = %s, want {\"n\":[1,2]}", args)
	}
	status, out = post(`{"kind":"k","arg":{}}`)
	if status != http.StatusBadRequest || out["code"] != "invalid_argument" {
		t.Fatalf("enqueue with an unknown field = %d %v; want 400 invalid_argument", status, out)
	}
}

// workStream is one Work stream of a test, with helpers that fail the
// test rather than return errors.
type workStream struct {
	t *testing.T
	s *connect.BidiStreamForClient[droverv1.WorkRequest, droverv1.WorkResponse]
	// lastAck is the ack that ack returned last.
	lastAck *droverv1.WorkAck
}

func openWork(t *testing.T, h *harness, queue string) *workStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	workers := droverv1connect.NewWorkerServiceClient(h.client, h.url, connect.WithGRPC())
	w := &workStream{t: t, s: workers.Work(ctx)}
	w.send(0, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Start{Start: &droverv1.WorkStart{
		Queues: []string{queue}, LeaseFor: durationpb.New(time.Minute), Worker: "w1",
	}}})
	return w
}

func (w *workStream) send(id uint64, m *droverv1.WorkRequest) {
	w.t.Helper()
	m.CorrelationId = id
	if err := w.s.Send(m); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

func (w *workStream) credit(n int32) {
	w.t.Helper()
	w.send(0, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Credit{Credit: &droverv1.WorkCredit{Credits: n}}})
}

func (w *workStream) complete(id uint64, j *droverv1.Job, token string) {
	w.t.Helper()
	w.send(id, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Complete{Complete: &droverv1.CompleteRequest{Id: j.GetId(), LeaseToken: token}}})
}

func (w *workStream) recv() *droverv1.WorkResponse {
	w.t.Helper()
	m, err := w.s.Receive()
	if err != nil {
		w.t.Fatalf("receive: %v", err)
	}
	return m
}

// jobs receives pushed jobs until it has n of them; an ack instead fails.
func (w *workStream) jobs(n int) []*droverv1.Job {
	w.t.Helper()
	var out []*droverv1.Job
	for len(out) < n {
		m := w.recv()
		if m.GetJobs() == nil {
			w.t.Fatalf("got %v, want pushed jobs", m)
		}
		out = append(out, m.GetJobs().GetJobs()...)
	}
	if len(out) != n {
		w.t.Fatalf("pushed %d jobs, want %d: more than the credits granted", len(out), n)
	}
	return out
}

func (w *workStream) ack(id uint64) *droverv1.WorkAck {
	w.t.Helper()
	m := w.recv()
	a := m.GetAck()
	if a == nil || a.GetCorrelationId() != id {
		w.t.Fatalf("got %v, want the ack of message %d", m, id)
	}
	w.lastAck = a
	return a
}

// TestWorkStream drives one worker stream through the protocol: jobs are
// pushed only as credits allow, and each settle is acknowledged with its
// correlation id, a stale token with lease_lost.
func TestWorkStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	for range 3 {
		if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "w"}); err != nil {
			t.Fatal(err)
		}
	}
	w := openWork(t, h, "w")
	w.credit(2)
	got := w.jobs(2)
	for _, j := range got {
		if j.GetState() != droverv1.JobState_JOB_STATE_RUNNING || j.GetLeaseToken() == "" || j.GetAttemptedBy() != "w1" {
			t.Fatalf("pushed job %v; want running, with a lease token, attempted by w1", j)
		}
	}
	a, b := got[0], got[1]
	w.complete(1, a, a.GetLeaseToken())
	w.complete(2, b, "not-the-token")
	if ack := w.ack(1); ack.GetError() != nil || ack.GetJob().GetState() != droverv1.JobState_JOB_STATE_COMPLETED || ack.GetJob().GetId() != a.GetId() {
		t.Fatalf("ack of a complete: %v; want job %d completed", ack, a.GetId())
	}
	if j := w.lastAck.GetJob(); j.GetArgs() != nil || j.GetLeaseToken() != "" || j.GetKind() != "" || j.GetFinalizedAt() == nil {
		t.Fatalf("a complete's ack carries %v; want only id, state, attempt and finalized_at", j)
	}
	if ack := w.ack(2); ack.GetError().GetCode() != "lease_lost" || ack.GetJob() != nil {
		t.Fatalf("ack of a complete with a wrong token: %v; want error lease_lost", ack)
	}

	w.credit(1)
	c := w.jobs(1)[0]
	w.send(3, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Heartbeat{Heartbeat: &droverv1.HeartbeatRequest{Id: c.GetId(), LeaseToken: c.GetLeaseToken(), LeaseFor: durationpb.New(2 * time.Minute)}}})
	if ack := w.ack(3); ack.GetError() != nil || !ack.GetJob().GetLeaseExpiresAt().AsTime().After(c.GetLeaseExpiresAt().AsTime()) {
		t.Fatalf("ack of a heartbeat: %v; want a later expiry than %v", ack, c.GetLeaseExpiresAt())
	}
	w.send(4, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Fail{Fail: &droverv1.FailRequest{Id: c.GetId(), LeaseToken: c.GetLeaseToken(), Error: "boom", RetryIn: durationpb.New(time.Hour)}}})
	if ack := w.ack(4); ack.GetJob().GetState() != droverv1.JobState_JOB_STATE_RETRYABLE {
		t.Fatalf("ack of a fail: %v; want retryable", ack)
	}
	w.send(5, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Snooze{Snooze: &droverv1.SnoozeRequest{Id: b.GetId(), LeaseToken: b.GetLeaseToken(), Delay: durationpb.New(time.Hour)}}})
	if ack := w.ack(5); ack.GetJob().GetState() != droverv1.JobState_JOB_STATE_SCHEDULED {
		t.Fatalf("ack of a snooze: %v; want scheduled", ack)
	}

	// No credit is left and no job is available: closing ends the
	// stream cleanly.
	if err := w.s.CloseRequest(); err != nil {
		t.Fatal(err)
	}
	if m, err := w.s.Receive(); err == nil || !errors.Is(err, io.EOF) {
		t.Fatalf("after closing: %v, %v; want the end of the stream", m, err)
	}
	w.s.CloseResponse() //nolint:errcheck // the stream is over
}

// TestWorkStreamBatchesCompletions sends many completions back to back:
// each gets its own ack, in order, however they were batched.
func TestWorkStreamBatchesCompletions(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	const n = 200
	specs := make([]job.Spec, n)
	for i := range specs {
		specs[i] = job.Spec{Kind: "k", Queue: "many"}
	}
	if _, err := h.eng.Enqueue(t.Context(), specs...); err != nil {
		t.Fatal(err)
	}
	w := openWork(t, h, "many")
	w.credit(n)
	jobs := w.jobs(n)
	for i, j := range jobs {
		w.complete(uint64(i+1), j, j.GetLeaseToken())
	}
	for i := range jobs {
		if ack := w.ack(uint64(i + 1)); ack.GetError() != nil {
			t.Fatalf("ack %d: %v", i+1, ack)
		}
	}
	res, err := h.eng.List(t.Context(), store.ListParams{Queues: []string{"many"}, States: []job.State{job.StateCompleted}, Limit: n})
	if err != nil || len(res.Jobs) != n {
		t.Fatalf("%d jobs completed (%v), want %d", len(res.Jobs), err, n)
	}
	w.s.CloseRequest()  //nolint:errcheck // the test is over
	w.s.CloseResponse() //nolint:errcheck // the test is over
}

// TestWorkStreamReconnect breaks a stream while it holds a job: the job is
// re-delivered on a new stream once its lease expires, and the old token
// can no longer settle it, so it is neither lost nor completed twice.
func TestWorkStreamReconnect(t *testing.T) {
	t.Parallel()
	clock := testenv.NewClock()
	h := newHarness(t, engine.Config{Now: clock.Now})
	if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "rc"}); err != nil {
		t.Fatal(err)
	}
	first := openWork(t, h, "rc")
	first.credit(1)
	old := first.jobs(1)[0]
	first.s.CloseRequest()  //nolint:errcheck // the worker dies
	first.s.CloseResponse() //nolint:errcheck // the worker dies

	clock.Advance(2 * time.Minute) // past the lease of one minute
	if n, err := h.eng.Rescue(t.Context(), 10); err != nil || n != 1 {
		t.Fatalf("Rescue = %d, %v; want the job re-delivered", n, err)
	}
	second := openWork(t, h, "rc")
	second.credit(1)
	again := second.jobs(1)[0]
	if again.GetId() != old.GetId() || again.GetAttempt() != 2 || again.GetLeaseToken() == old.GetLeaseToken() {
		t.Fatalf("re-delivered %v; want job %d, attempt 2, a new token", again, old.GetId())
	}
	second.complete(1, old, old.GetLeaseToken())
	if ack := second.ack(1); ack.GetError().GetCode() != "lease_lost" {
		t.Fatalf("complete with the dead stream's token: %v; want lease_lost", ack)
	}
	second.complete(2, again, again.GetLeaseToken())
	if ack := second.ack(2); ack.GetJob().GetState() != droverv1.JobState_JOB_STATE_COMPLETED {
		t.Fatalf("complete with the live token: %v; want completed", ack)
	}
	second.s.CloseRequest()  //nolint:errcheck // the test is over
	second.s.CloseResponse() //nolint:errcheck // the test is over
}

// TestWorkStreamMustStart refuses a stream that does not open with start.
func TestWorkStreamMustStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	workers := droverv1connect.NewWorkerServiceClient(h.client, h.url, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	stream := workers.Work(ctx)
	if err := stream.Send(&droverv1.WorkRequest{Message: &droverv1.WorkRequest_Credit{Credit: &droverv1.WorkCredit{Credits: 1}}}); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if _, err := stream.Receive(); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("a stream opened with a credit: %v, want INVALID_ARGUMENT", err)
	}
	stream.CloseRequest()  //nolint:errcheck // the stream is over
	stream.CloseResponse() //nolint:errcheck // the stream is over
}

// TestWorkStreamDrain drains a stream that holds unspent credits and has
// a lease waiting: the server answers drained, pushes nothing after it
// even when jobs arrive, and settles still go through.
func TestWorkStreamDrain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "dr"}); err != nil {
		t.Fatal(err)
	}
	w := openWork(t, h, "dr")
	w.credit(5)
	held := w.jobs(1)[0]
	// Four credits are left, and a lease waits for jobs.
	w.send(0, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Drain{Drain: &droverv1.WorkDrain{}}})
	if m := w.recv(); m.GetDrained() == nil {
		t.Fatalf("after drain: %v, want drained", m)
	}
	if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "dr"}); err != nil {
		t.Fatal(err)
	}
	w.credit(3) // ignored once drained
	w.send(7, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Fail{Fail: &droverv1.FailRequest{
		Id: held.GetId(), LeaseToken: held.GetLeaseToken(), Error: "account closed", Cancel: true,
	}}})
	if ack := w.ack(7); ack.GetJob().GetState() != droverv1.JobState_JOB_STATE_CANCELLED {
		t.Fatalf("ack of a fail with cancel: %v; want cancelled", ack)
	}
	if err := w.s.CloseRequest(); err != nil {
		t.Fatal(err)
	}
	if m, err := w.s.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("after drained and closing: %v, %v; want the end of the stream and no job", m, err)
	}
	w.s.CloseResponse() //nolint:errcheck // the stream is over
	res, err := h.eng.List(t.Context(), store.ListParams{Queues: []string{"dr"}, States: []job.State{job.StateAvailable}, Limit: 10})
	if err != nil || len(res.Jobs) != 1 {
		t.Fatalf("%d jobs available after the drain (%v), want the new one untouched", len(res.Jobs), err)
	}
}

// TestArgsJSON sends args as JSON text: they are stored exactly (an
// integer a double cannot hold survives), answered as JSON text, pushed as
// JSON text on a stream that asks for it, and refused together with args.
func TestArgsJSON(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	jobs := droverv1connect.NewJobServiceClient(h.client, h.url, connect.WithGRPC())
	const text = `{"n":9007199254740993}`
	res, err := jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", Queue: "aj", ArgsJson: []byte(`{ "n" : 9007199254740993 }`)}))
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Msg.GetJob(); string(got.GetArgsJson()) != text || got.GetArgs() != nil {
		t.Fatalf("enqueue answered args %v / args_json %s, want args_json %s", got.GetArgs(), got.GetArgsJson(), text)
	}
	stored, err := h.eng.Get(t.Context(), job.ID(res.Msg.GetJob().GetId()))
	if err != nil || string(stored.Args) != text {
		t.Fatalf("stored args %s (%v), want %s", stored.Args, err, text)
	}
	_, err = jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", Args: structpb.NewNumberValue(1), ArgsJson: []byte("1")}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("args and args_json together: %v, want INVALID_ARGUMENT", err)
	}
	_, err = jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", ArgsJson: []byte("{not json")}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("args_json that is not JSON: %v, want INVALID_ARGUMENT", err)
	}

	workers := droverv1connect.NewWorkerServiceClient(h.client, h.url, connect.WithGRPC())
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	w := &workStream{t: t, s: workers.Work(ctx)}
	w.send(0, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_Start{Start: &droverv1.WorkStart{Queues: []string{"aj"}, ArgsJson: true}}})
	w.credit(1)
	pushed := w.jobs(1)[0]
	if string(pushed.GetArgsJson()) != text || pushed.GetArgs() != nil {
		t.Fatalf("pushed args %v / args_json %s, want args_json %s", pushed.GetArgs(), pushed.GetArgsJson(), text)
	}
	w.s.CloseRequest()  //nolint:errcheck // the test is over
	w.s.CloseResponse() //nolint:errcheck // the test is over
}

// TestWorkStreamCompleteBatch completes jobs in one WorkCompleteBatch: one
// WorkAcks answers, an ack per completion with consecutive correlation
// ids, a stale token refused in its own slot.
func TestWorkStreamCompleteBatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	for range 3 {
		if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "cb"}); err != nil {
			t.Fatal(err)
		}
	}
	w := openWork(t, h, "cb")
	w.credit(3)
	js := w.jobs(3)
	batch := &droverv1.WorkCompleteBatch{Completions: []*droverv1.CompleteRequest{
		{Id: js[0].GetId(), LeaseToken: js[0].GetLeaseToken()},
		{Id: js[1].GetId(), LeaseToken: "stale"},
		{Id: js[2].GetId(), LeaseToken: js[2].GetLeaseToken()},
	}}
	w.send(40, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_CompleteBatch{CompleteBatch: batch}})
	m := w.recv()
	acks := m.GetAcks().GetAcks()
	if len(acks) != 3 {
		t.Fatalf("answer to a batch of 3: %v, want one WorkAcks with 3 acks", m)
	}
	for i, a := range acks {
		if a.GetCorrelationId() != uint64(40+i) {
			t.Errorf("ack %d has correlation id %d, want %d", i, a.GetCorrelationId(), 40+i)
		}
	}
	if acks[0].GetJob().GetState() != droverv1.JobState_JOB_STATE_COMPLETED || acks[2].GetJob().GetState() != droverv1.JobState_JOB_STATE_COMPLETED {
		t.Errorf("acks %v, want the first and last completed", acks)
	}
	if acks[1].GetError().GetCode() != "lease_lost" {
		t.Errorf("ack of the stale completion: %v, want lease_lost", acks[1])
	}
	// An empty batch is a protocol error that ends the stream.
	w.send(50, &droverv1.WorkRequest{Message: &droverv1.WorkRequest_CompleteBatch{CompleteBatch: &droverv1.WorkCompleteBatch{}}})
	if _, err := w.s.Receive(); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("after an empty batch: %v, want INVALID_ARGUMENT", err)
	}
	w.s.CloseRequest()  //nolint:errcheck // the stream is over
	w.s.CloseResponse() //nolint:errcheck // the stream is over
}

// TestSmallAnswersAreNotCompressed: a client that accepts gzip gets small
// messages as they are (compressing each small message cost more than
// settling a job) and large ones compressed. The flag byte of each gRPC
// message frame says which.
func TestSmallAnswersAreNotCompressed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{})
	big := strings.Repeat("x", 2000)
	for range 20 {
		if _, err := h.eng.Enqueue(t.Context(), job.Spec{Kind: "k", Queue: "gz", Args: []byte(`"` + big + `"`)}); err != nil {
			t.Fatal(err)
		}
	}
	// compressedFlag calls procedure with req over raw gRPC, accepting
	// gzip, and returns the flag byte of the answer's message frame.
	compressedFlag := func(procedure string, req proto.Message) byte {
		t.Helper()
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		frame := append([]byte{0, 0, 0, 0, 0}, b...)
		binary.BigEndian.PutUint32(frame[1:5], uint32(len(b))) //nolint:gosec // G115: a small message
		r, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+procedure, bytes.NewReader(frame))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Content-Type", "application/grpc")
		r.Header.Set("Grpc-Accept-Encoding", "gzip")
		r.Header.Set("Te", "trailers")
		resp, err := h.client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || len(body) < 5 {
			t.Fatalf("%s: %d bytes (%v), status %s", procedure, len(body), err, resp.Trailer.Get("Grpc-Status"))
		}
		return body[0]
	}
	if f := compressedFlag("/drover.v1.JobService/GetJob", &droverv1.GetJobRequest{Id: 1}); f != 0 {
		t.Errorf("a 2 KiB answer was compressed (flag %d)", f)
	}
	if f := compressedFlag("/drover.v1.JobService/ListJobs", &droverv1.ListJobsRequest{Queue: []string{"gz"}, Limit: 20}); f != 1 {
		t.Errorf("a 40 KiB answer was not compressed (flag %d)", f)
	}
}
