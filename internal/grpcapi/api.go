// Package grpcapi is Drover's gRPC face, served with Connect
// (connectrpc.com/connect): the same handlers answer gRPC, gRPC-Web and
// Connect clients, on the REST port. The contract is api/proto/drover/v1
// (package drover.v1), generated into internal/gen. Handlers only
// translate between protobuf and the engine; no job logic lives here.
//
// Every call of the drover.v1 services goes through one interceptor that
// applies, in order: admission control (shared with REST: an overloaded
// server answers RESOURCE_EXHAUSTED with retry info), the bearer-token
// check (auth.Authenticator, with the scope that auth.Op.Scope gives the
// call's operation, the same table as REST's), and the error table
// (package errcode). The gRPC health service (grpc.health.v1) and server
// reflection (v1 and v1alpha) are served beside them, open to all, so that
// grpc_health_probe and grpcurl work.
//
// JobService's Enqueue and EnqueueBatch take REST's idempotency contract
// through the idempotency-key metadata (IdempotencyKeyHeader). Every call,
// health and reflection included, records the gRPC code it ends with for
// the server's metrics (WithCallStatus, CallStatus.Code).
package grpcapi

import (
	"context"
	"log/slog"
	"net/http"
	"slices"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
)

// Defaults of Options.
const (
	// DefaultMaxBatchBytes limits a JobService message (a batch enqueue
	// carries up to 10,000 jobs), as REST limits a batch body.
	DefaultMaxBatchBytes = 32 << 20
	// DefaultMaxSendBytes limits a response message; a listing whose page
	// would be larger fails with RESOURCE_EXHAUSTED (ask for a smaller
	// limit).
	DefaultMaxSendBytes = 64 << 20
)

// Options configure the gRPC face.
type Options struct {
	// Auth checks bearer tokens; nil leaves the API open (tests only:
	// the server always sets it).
	Auth *auth.Authenticator
	// Admit, when set, admits each call or refuses it with an error
	// matching job.ErrOverloaded. long marks calls that mostly wait
	// (leases, streams), which REST counts apart. The returned release is
	// called when the call ends.
	Admit func(long bool) (release func(), err error)
	// MaxArgsBytes is the engine's args limit: messages of the worker,
	// queue and event services may be that large plus 64 KiB. Zero means
	// 1 MiB.
	MaxArgsBytes int
	// MaxBatchBytes limits JobService messages; zero means
	// DefaultMaxBatchBytes.
	MaxBatchBytes int
	// MaxSendBytes limits a response message; zero means
	// DefaultMaxSendBytes.
	MaxSendBytes int
	// Logger receives internal errors in full; nil means slog.Default().
	Logger *slog.Logger
}

// API is the gRPC face over one engine.
type API struct {
	eng    *engine.Engine
	opts   Options
	log    *slog.Logger
	health *grpchealth.StaticChecker
}

// Services lists the fully-qualified names of the services served.
var Services = []string{
	droverv1connect.JobServiceName,
	droverv1connect.WorkerServiceName,
	droverv1connect.QueueServiceName,
	droverv1connect.EventServiceName,
}

// New returns the gRPC face over eng.
func New(eng *engine.Engine, opts Options) *API {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxArgsBytes <= 0 {
		opts.MaxArgsBytes = 1 << 20
	}
	if opts.MaxBatchBytes <= 0 {
		opts.MaxBatchBytes = DefaultMaxBatchBytes
	}
	if opts.MaxSendBytes <= 0 {
		opts.MaxSendBytes = DefaultMaxSendBytes
	}
	return &API{eng: eng, opts: opts, log: opts.Logger, health: grpchealth.NewStaticChecker(Services...)}
}

// compressMinBytes is the size from which an answer is compressed for a
// client that accepts it.
const compressMinBytes = 16 << 10

// Mount registers the four drover.v1 services, the health service and
// reflection on mux, at their gRPC paths (/drover.v1.JobService/Enqueue
// and so on). Serve mux with HTTP/2 (h2c on plaintext) for gRPC clients;
// Connect and gRPC-Web clients also work over HTTP/1.1. Every call records
// its gRPC code for the server's metrics (see WithCallStatus).
func (a *API) Mount(mux *http.ServeMux) {
	common := slices.Clip(append([]connect.HandlerOption{
		connect.WithInterceptors(statusRecorder{}, interceptor{a}),
		connect.WithSendMaxBytes(a.opts.MaxSendBytes),
		// Compressing a small message costs more than it saves (a gzip
		// writer's reset alone is about the cost of settling a job):
		// answers under compressMinBytes go out as they are, even to a
		// client that accepts gzip.
		connect.WithCompressMinBytes(compressMinBytes),
	}, jsonCodecs...))
	small := connect.WithReadMaxBytes(a.opts.MaxArgsBytes + 64<<10)
	mux.Handle(droverv1connect.NewJobServiceHandler(&jobService{a}, append(common, connect.WithReadMaxBytes(a.opts.MaxBatchBytes))...))
	mux.Handle(droverv1connect.NewWorkerServiceHandler(&workerService{a}, append(common, small)...))
	mux.Handle(droverv1connect.NewQueueServiceHandler(&queueService{a}, append(common, small)...))
	mux.Handle(droverv1connect.NewEventServiceHandler(&eventService{a}, append(common, small)...))
	record := connect.WithInterceptors(statusRecorder{})
	mux.Handle(grpchealth.NewHandler(a.health, record))
	reflector := grpcreflect.NewStaticReflector(append([]string{grpchealth.HealthV1ServiceName}, Services...)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, record))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, record))
}

// SetServing sets what the health service answers for the drover.v1
// services and the server as a whole (the empty service name): SERVING,
// or NOT_SERVING while the server stops.
func (a *API) SetServing(serving bool) {
	status := grpchealth.StatusServing
	if !serving {
		status = grpchealth.StatusNotServing
	}
	a.health.SetStatus("", status)
	for _, s := range Services {
		a.health.SetStatus(s, status)
	}
}

// operations gives the auth operation of every procedure, so that the
// scope a call needs comes from the one table of auth.Op.Scope. A
// procedure missing here needs admin.
var operations = map[string]auth.Op{
	droverv1connect.JobServiceEnqueueProcedure:       auth.OpEnqueue,
	droverv1connect.JobServiceEnqueueBatchProcedure:  auth.OpEnqueueBatch,
	droverv1connect.JobServiceGetJobProcedure:        auth.OpGetJob,
	droverv1connect.JobServiceListJobsProcedure:      auth.OpListJobs,
	droverv1connect.JobServiceCancelJobProcedure:     auth.OpCancelJob,
	droverv1connect.JobServiceRetryJobProcedure:      auth.OpRetryJob,
	droverv1connect.JobServiceDeleteJobProcedure:     auth.OpDeleteJob,
	droverv1connect.WorkerServiceLeaseProcedure:      auth.OpLease,
	droverv1connect.WorkerServiceHeartbeatProcedure:  auth.OpHeartbeat,
	droverv1connect.WorkerServiceCompleteProcedure:   auth.OpComplete,
	droverv1connect.WorkerServiceFailProcedure:       auth.OpFail,
	droverv1connect.WorkerServiceSnoozeProcedure:     auth.OpSnooze,
	droverv1connect.WorkerServiceWorkProcedure:       auth.OpWork,
	droverv1connect.QueueServiceListQueuesProcedure:  auth.OpListQueues,
	droverv1connect.QueueServicePauseQueueProcedure:  auth.OpPauseQueue,
	droverv1connect.QueueServiceResumeQueueProcedure: auth.OpResumeQueue,
	droverv1connect.EventServiceSubscribeProcedure:   auth.OpSubscribe,
}

// Operation returns the auth operation of a procedure
// ("/drover.v1.JobService/Enqueue"), and false for one it does not know.
func Operation(procedure string) (auth.Op, bool) {
	op, ok := operations[procedure]
	return op, ok
}

// longCalls mostly wait: REST's admission counts them apart from other
// requests, as it counts lease calls.
var longCalls = map[string]bool{
	droverv1connect.WorkerServiceLeaseProcedure:    true,
	droverv1connect.WorkerServiceWorkProcedure:     true,
	droverv1connect.EventServiceSubscribeProcedure: true,
}

// interceptor applies admission, the token check and the error table to
// every call of the drover.v1 services.
type interceptor struct{ a *API }

// enter admits and authenticates a call; the returned context carries
// the caller's principal.
func (a *API) enter(ctx context.Context, procedure string, header http.Header) (context.Context, func(), error) {
	release := func() {}
	if a.opts.Admit != nil {
		r, err := a.opts.Admit(longCalls[procedure])
		if err != nil {
			return ctx, release, err
		}
		release = r
	}
	if a.opts.Auth != nil {
		op, ok := operations[procedure]
		need := auth.ScopeAdmin
		if ok {
			need = op.Scope()
		}
		who, authed, err := a.opts.Auth.Check(ctx, header.Get("Authorization"), need)
		if err != nil {
			release()
			return ctx, func() {}, err
		}
		if authed {
			ctx = auth.WithPrincipal(ctx, who)
		}
	}
	return ctx, release, nil
}

// WrapUnary implements connect.Interceptor.
func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		proc := req.Spec().Procedure
		ctx, release, err := i.a.enter(ctx, proc, req.Header())
		defer release()
		if err != nil {
			return nil, i.a.toError(ctx, proc, err)
		}
		res, err := next(ctx, req)
		if err != nil {
			return nil, i.a.toError(ctx, proc, err)
		}
		return res, nil
	}
}

// WrapStreamingClient implements connect.Interceptor; the face has no
// clients.
func (interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		proc := conn.Spec().Procedure
		ctx, release, err := i.a.enter(ctx, proc, conn.RequestHeader())
		defer release()
		if err != nil {
			return i.a.toError(ctx, proc, err)
		}
		if err := next(ctx, conn); err != nil {
			return i.a.toError(ctx, proc, err)
		}
		return nil
	}
}
