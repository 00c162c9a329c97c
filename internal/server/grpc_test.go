package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// grpcGoConn dials the server with grpc-go, the reference gRPC client, in
// plaintext: it speaks HTTP/2 with prior knowledge (h2c).
func grpcGoConn(t *testing.T, base string) *grpc.ClientConn {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(u.Host, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestGRPCGoClient checks the gRPC face with grpc-go on the REST port: the
// health service answers SERVING, reflection (v1 and v1alpha) lists the
// services, a call works, and an error arrives with its gRPC code and the
// stable code in an ErrorInfo detail.
func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	conn := grpcGoConn(t, r.url)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	health := grpc_health_v1.NewHealthClient(conn)
	for _, svc := range []string{"", droverv1connect.JobServiceName, droverv1connect.EventServiceName} {
		res, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: svc})
		if err != nil || res.GetStatus() != grpc_health_v1.HealthCheckResponse_SERVING {
			t.Errorf("health check of %q = %v, %v; want SERVING", svc, res.GetStatus(), err)
		}
	}
	if _, err := health.Check(ctx, &grpc_health_v1.HealthCheckRequest{Service: "no.such.Service"}); status.Code(err) != codes.NotFound {
		t.Errorf("health check of an unknown service: %v, want NOT_FOUND", err)
	}

	want := []string{
		"drover.v1.EventService", "drover.v1.JobService", "drover.v1.QueueService", "drover.v1.WorkerService",
		"grpc.health.v1.Health",
	}
	if got := listServicesV1(ctx, t, conn); !slices.Equal(got, want) {
		t.Errorf("reflection v1 lists %q, want %q", got, want)
	}
	if got := listServicesV1Alpha(ctx, t, conn); !slices.Equal(got, want) {
		t.Errorf("reflection v1alpha lists %q, want %q", got, want)
	}

	// A call through grpc-go's generic Invoke with the generated messages.
	args, err := structpb.NewValue(map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	var res droverv1.EnqueueResponse
	if err := conn.Invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, &droverv1.EnqueueRequest{Kind: "k", Args: args}, &res); err != nil {
		t.Fatalf("Enqueue through grpc-go: %v", err)
	}
	if res.GetJob().GetId() == 0 || res.GetJob().GetState() != droverv1.JobState_JOB_STATE_AVAILABLE || res.GetJob().GetArgs().GetStructValue().GetFields()["n"].GetNumberValue() != 1 {
		t.Fatalf("Enqueue through grpc-go = %v; want an available job with args {\"n\":1}", res.GetJob())
	}

	var trailer metadata.MD
	err = conn.Invoke(ctx, droverv1connect.JobServiceGetJobProcedure, &droverv1.GetJobRequest{Id: 1 << 40}, &droverv1.GetJobResponse{}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	if st.Code() != codes.NotFound {
		t.Fatalf("GetJob of a missing job through grpc-go: %v, want NOT_FOUND", err)
	}
	var reason string
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			reason = info.GetReason()
		}
	}
	if reason != "not_found" || strings.Join(trailer.Get(grpcapi.CodeHeader), ",") != "not_found" {
		t.Fatalf("error details %v, trailer %v; want ErrorInfo reason not_found and %s: not_found", st.Details(), trailer, grpcapi.CodeHeader)
	}
}

func listServicesV1(ctx context.Context, t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend() //nolint:errcheck // the stream ends with the test
	if err := stream.Send(&reflectionv1.ServerReflectionRequest{MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names
}

// listServicesV1Alpha asks the deprecated v1alpha reflection service,
// which older grpcurl releases and other tools still use.
//
//nolint:staticcheck // SA1019: v1alpha is deprecated, and served on purpose
func listServicesV1Alpha(ctx context.Context, t *testing.T, conn *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionv1alpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend() //nolint:errcheck // the stream ends with the test
	if err := stream.Send(&reflectionv1alpha.ServerReflectionRequest{MessageRequest: &reflectionv1alpha.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	res, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range res.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	slices.Sort(names)
	return names
}

// TestGRPCOverloadIsResourceExhausted fills the lease slots that gRPC
// shares with REST: the next call is refused with RESOURCE_EXHAUSTED, a
// RetryInfo detail and retry-after metadata, and so is a REST lease.
func TestGRPCOverloadIsResourceExhausted(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxLeaseWaiters = 1
	r := serve(t, cfg)
	workers := droverv1connect.NewWorkerServiceClient(h2cClient(t), r.url, connect.WithGRPC())

	// One long poll holds the only lease slot until the server stops.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	held := make(chan error, 1)
	go func() {
		_, err := workers.Lease(ctx, connect.NewRequest(&droverv1.LeaseRequest{Queues: []string{"empty"}, Wait: durationpb.New(time.Minute)}))
		held <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for r.srv.Engine().Waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first lease never started waiting")
		}
		time.Sleep(10 * time.Millisecond)
	}

	_, err := workers.Lease(t.Context(), connect.NewRequest(&droverv1.LeaseRequest{Queues: []string{"empty"}}))
	var ce *connect.Error
	if !errors.As(err, &ce) || ce.Code() != connect.CodeResourceExhausted {
		t.Fatalf("second lease: %v, want RESOURCE_EXHAUSTED", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range ce.Details() {
		if v, err := d.Value(); err == nil {
			if ri, ok := v.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
	}
	if retry.GetRetryDelay().AsDuration() != time.Second || ce.Meta().Get(grpcapi.RetryAfterHeader) != "1" || ce.Meta().Get(grpcapi.CodeHeader) != "overloaded" {
		t.Fatalf("refusal %v: RetryInfo %v, metadata %v; want a 1s retry delay, retry-after 1, drover-code overloaded", err, retry, ce.Meta())
	}
	rest := newRESTFace(t, r.url)
	if o := rest.lease(t, "", "empty"); o.code != "overloaded" {
		t.Fatalf("REST lease while gRPC holds the slot: %+v, want overloaded", o)
	}
	cancel()
	if err := <-held; connect.CodeOf(err) != connect.CodeCanceled {
		t.Fatalf("held lease after cancel: %v, want CANCELED", err)
	}
}

// TestGRPCMessageLimit sends a message over the worker service's limit
// (the args limit plus 64 KiB): it is refused with RESOURCE_EXHAUSTED and
// changes nothing.
func TestGRPCMessageLimit(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.MaxArgsBytes = 1024
	r := serve(t, cfg)
	c := h2cClient(t)
	jobs := droverv1connect.NewJobServiceClient(c, r.url, connect.WithGRPC())
	workers := droverv1connect.NewWorkerServiceClient(c, r.url, connect.WithGRPC())
	if _, err := jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k"})); err != nil {
		t.Fatal(err)
	}
	l, err := workers.Lease(t.Context(), connect.NewRequest(&droverv1.LeaseRequest{Queues: []string{job.DefaultQueue}}))
	if err != nil || len(l.Msg.GetJobs()) != 1 {
		t.Fatalf("lease: %v, %v", l, err)
	}
	leased := l.Msg.GetJobs()[0]
	big := structpb.NewStringValue(strings.Repeat("x", 100<<10))
	_, err = workers.Complete(t.Context(), connect.NewRequest(&droverv1.CompleteRequest{Id: leased.GetId(), LeaseToken: leased.GetLeaseToken(), Output: big}))
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Fatalf("complete with a 100 KiB output: %v, want RESOURCE_EXHAUSTED", err)
	}
	// Within the message limit but over the args limit: the engine's
	// own check, INVALID_ARGUMENT with the stable code too_large.
	mid := structpb.NewStringValue(strings.Repeat("x", 2048))
	_, err = workers.Complete(t.Context(), connect.NewRequest(&droverv1.CompleteRequest{Id: leased.GetId(), LeaseToken: leased.GetLeaseToken(), Output: mid}))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || grpcCode(t, err) != "too_large" {
		t.Fatalf("complete with a 2 KiB output over a 1 KiB limit: %v, want INVALID_ARGUMENT too_large", err)
	}
	got, err := r.srv.Engine().Get(t.Context(), job.ID(leased.GetId()))
	if err != nil || got.State != job.StateRunning {
		t.Fatalf("job after refused completes: %v, %v; want still running", got, err)
	}
}

// TestGRPCSubscribe streams the events of a job's life through the real
// server and checks that a stopping server ends the stream with
// UNAVAILABLE instead of waiting for it.
func TestGRPCSubscribe(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	c := h2cClient(t)
	events := droverv1connect.NewEventServiceClient(c, r.url, connect.WithGRPC())
	jobs := droverv1connect.NewJobServiceClient(c, r.url, connect.WithGRPC())
	workers := droverv1connect.NewWorkerServiceClient(c, r.url, connect.WithGRPC())

	stream, err := events.Subscribe(t.Context(), connect.NewRequest(&droverv1.SubscribeRequest{Queue: []string{"watched"}}))
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	waitSubscribers(t, r, 1)

	if _, err := jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", Queue: "elsewhere"})); err != nil {
		t.Fatal(err)
	}
	e, err := jobs.Enqueue(t.Context(), connect.NewRequest(&droverv1.EnqueueRequest{Kind: "k", Queue: "watched"}))
	if err != nil {
		t.Fatal(err)
	}
	id := e.Msg.GetJob().GetId()
	l, err := workers.Lease(t.Context(), connect.NewRequest(&droverv1.LeaseRequest{Queues: []string{"watched"}}))
	if err != nil || len(l.Msg.GetJobs()) != 1 {
		t.Fatalf("lease: %v, %v", l, err)
	}
	if _, err := workers.Complete(t.Context(), connect.NewRequest(&droverv1.CompleteRequest{Id: id, LeaseToken: l.Msg.GetJobs()[0].GetLeaseToken()})); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		typ      droverv1.JobEventType
		from, to droverv1.JobState
	}{
		{droverv1.JobEventType_JOB_EVENT_TYPE_INSERTED, droverv1.JobState_JOB_STATE_UNSPECIFIED, droverv1.JobState_JOB_STATE_AVAILABLE},
		{droverv1.JobEventType_JOB_EVENT_TYPE_LEASED, droverv1.JobState_JOB_STATE_AVAILABLE, droverv1.JobState_JOB_STATE_RUNNING},
		{droverv1.JobEventType_JOB_EVENT_TYPE_COMPLETED, droverv1.JobState_JOB_STATE_RUNNING, droverv1.JobState_JOB_STATE_COMPLETED},
	}
	for i, w := range want {
		if !stream.Receive() {
			t.Fatalf("stream ended before event %d: %v", i, stream.Err())
		}
		ev := stream.Msg().GetEvent()
		if ev.GetType() != w.typ || ev.GetJobId() != id || ev.GetFromState() != w.from || ev.GetToState() != w.to || ev.GetQueue() != "watched" || ev.GetKind() != "k" || ev.GetCount() != 1 || ev.GetAt() == nil {
			t.Fatalf("event %d = %v; want %s of job %d, %s → %s", i, ev, w.typ, id, w.from, w.to)
		}
	}

	// Stopping the server ends the stream at once, with UNAVAILABLE.
	r.stop()
	if stream.Receive() {
		t.Fatalf("an event after the stop: %v", stream.Msg())
	}
	if connect.CodeOf(stream.Err()) != connect.CodeUnavailable {
		t.Fatalf("stream after the stop: %v, want UNAVAILABLE", stream.Err())
	}
	if err := r.wait(t); err != nil {
		t.Fatalf("Serve: %v", err)
	}
}

// waitSubscribers waits until the engine has n event subscribers: the
// signal that a Subscribe call is in place.
func waitSubscribers(t *testing.T, r *running, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.srv.Engine().Subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers after 30s, want %d", r.srv.Engine().Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGRPCScopeMatrix calls every method of the drover.v1 contract, and
// the health and reflection services, with every kind of caller
// (authtest): UNAUTHENTICATED without a valid token, PERMISSION_DENIED for
// a scope that does not allow the call, and otherwise an answer from the
// handler. The methods are read from the contract's descriptors, so that
// a new method cannot escape the check, and the scopes expected are
// written out here, apart from the table the server uses (auth.Op).
func TestGRPCScopeMatrix(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	creds := authtest.NewCredentials(t, st)
	st.Close()
	r := serve(t, cfg)
	conn := grpcGoConn(t, r.url)

	need := map[string]auth.Scope{
		"drover.v1.JobService/Enqueue":                             auth.ScopeProducer,
		"drover.v1.JobService/EnqueueBatch":                        auth.ScopeProducer,
		"drover.v1.JobService/GetJob":                              auth.ScopeRead,
		"drover.v1.JobService/ListJobs":                            auth.ScopeRead,
		"drover.v1.JobService/CancelJob":                           auth.ScopeAdmin,
		"drover.v1.JobService/RetryJob":                            auth.ScopeAdmin,
		"drover.v1.JobService/DeleteJob":                           auth.ScopeAdmin,
		"drover.v1.WorkerService/Lease":                            auth.ScopeWorker,
		"drover.v1.WorkerService/Heartbeat":                        auth.ScopeWorker,
		"drover.v1.WorkerService/Complete":                         auth.ScopeWorker,
		"drover.v1.WorkerService/Fail":                             auth.ScopeWorker,
		"drover.v1.WorkerService/Snooze":                           auth.ScopeWorker,
		"drover.v1.WorkerService/Work":                             auth.ScopeWorker,
		"drover.v1.QueueService/ListQueues":                        auth.ScopeRead,
		"drover.v1.QueueService/PauseQueue":                        auth.ScopeAdmin,
		"drover.v1.QueueService/ResumeQueue":                       auth.ScopeAdmin,
		"drover.v1.EventService/Subscribe":                         auth.ScopeRead,
		"grpc.health.v1.Health/Check":                              authtest.Public,
		"grpc.health.v1.Health/Watch":                              authtest.Public,
		"grpc.health.v1.Health/List":                               authtest.Public, // UNIMPLEMENTED by grpchealth: reached, so allowed
		"grpc.reflection.v1.ServerReflection/ServerReflectionInfo": authtest.Public,
	}
	// A subscriber that was let in waits for an event: make one.
	poke := func(ctx context.Context) error {
		_, err := r.srv.Engine().Enqueue(ctx, job.Spec{Kind: "poke"})
		return err
	}
	var endpoints []authtest.Endpoint
	files := []protoreflect.FileDescriptor{
		droverv1.File_drover_v1_job_service_proto, droverv1.File_drover_v1_worker_service_proto,
		droverv1.File_drover_v1_queue_service_proto, droverv1.File_drover_v1_event_service_proto,
		grpc_health_v1.File_grpc_health_v1_health_proto, reflectionv1.File_grpc_reflection_v1_reflection_proto,
	}
	for _, f := range files {
		for i := range f.Services().Len() {
			svc := f.Services().Get(i)
			for j := range svc.Methods().Len() {
				endpoints = append(endpoints, grpcEndpoint(conn, svc.Methods().Get(j), poke))
			}
		}
	}
	if n := authtest.Check(t, endpoints, need, creds); n != len(need)*len(creds) {
		t.Fatalf("checked %d calls, want %d", n, len(need)*len(creds))
	}
}

// grpcEndpoint calls one method with an empty request through grpc-go.
// A call that reaches its handler is refused for its empty request, or
// answered: both are Allowed.
func grpcEndpoint(conn *grpc.ClientConn, md protoreflect.MethodDescriptor, poke func(context.Context) error) authtest.Endpoint {
	name := string(md.Parent().FullName()) + "/" + string(md.Name())
	return authtest.Endpoint{Name: name, Call: func(ctx context.Context, bearer string) (authtest.Outcome, string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if bearer != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+bearer)
		}
		in, out := dynamicpb.NewMessage(md.Input()), dynamicpb.NewMessage(md.Output())
		var err error
		if !md.IsStreamingClient() && !md.IsStreamingServer() {
			err = conn.Invoke(ctx, "/"+name, in, out)
		} else {
			err = callStream(ctx, conn, md, "/"+name, in, out, poke)
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unauthenticated:
			return authtest.Unauthenticated, st.Message(), nil
		case codes.PermissionDenied:
			return authtest.Forbidden, st.Message(), nil
		case codes.Unavailable, codes.DeadlineExceeded:
			return "", "", fmt.Errorf("the call did not get through: %w", err)
		default:
			return authtest.Allowed, st.Code().String(), nil
		}
	}}
}

// callStream opens a stream, sends one empty message and reads the first
// answer: a message, or the status that ends the stream (a refusal by the
// token check ends it at once). Once the headers are in, poke makes an
// event, for a subscription that would otherwise wait.
func callStream(ctx context.Context, conn *grpc.ClientConn, md protoreflect.MethodDescriptor, method string, in, out proto.Message, poke func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream, whatever it would do next
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return err
	}
	if err := s.SendMsg(in); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if !md.IsStreamingClient() {
		if err := s.CloseSend(); err != nil {
			return err
		}
	}
	if _, err := s.Header(); err != nil {
		return err
	}
	if err := poke(ctx); err != nil {
		return err
	}
	return s.RecvMsg(out)
}
