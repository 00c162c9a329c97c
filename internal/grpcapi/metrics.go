package grpcapi

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
)

// The face's metrics are the server's (package server counts every call
// of the routes that Mount registers in drover_grpc_requests_total, by
// procedure and gRPC code, and never as an HTTP status): gRPC sends its
// status in trailers, after an HTTP 200, so the HTTP status says nothing
// of how a call went. This file gives the server what it needs: whether a
// route is the face's (IsRoute), a bounded procedure label (Procedure),
// and the call's code (CallStatus), which the face's outermost
// interceptor records and the response itself confirms.

// UnknownProcedure is the procedure label of a call to a path that names
// no procedure of the face, so that made-up paths cannot grow the label
// space.
const UnknownProcedure = "unknown"

// routes are the mux patterns that Mount registers: a prefix for each
// drover.v1 service, and whatever paths the health and reflection
// handlers ask for (the health handler serves one path per procedure).
var routes = func() map[string]bool {
	m := map[string]bool{}
	for _, svc := range Services {
		m["/"+svc+"/"] = true
	}
	path, _ := grpchealth.NewHandler(grpchealth.NewStaticChecker())
	m[path] = true
	reflector := grpcreflect.NewStaticReflector()
	path, _ = grpcreflect.NewHandlerV1(reflector)
	m[path] = true
	path, _ = grpcreflect.NewHandlerV1Alpha(reflector)
	m[path] = true
	return m
}()

// procedures are the procedures served: those of the drover.v1 services,
// health and reflection.
var procedures = func() map[string]bool {
	m := map[string]bool{
		"/" + grpchealth.HealthV1ServiceName + "/Check":                       true,
		"/" + grpchealth.HealthV1ServiceName + "/Watch":                       true,
		"/" + grpcreflect.ReflectV1ServiceName + "/ServerReflectionInfo":      true,
		"/" + grpcreflect.ReflectV1AlphaServiceName + "/ServerReflectionInfo": true,
	}
	for p := range operations {
		m[p] = true
	}
	return m
}()

// IsRoute reports whether a ServeMux pattern is one that Mount registers
// ("/drover.v1.JobService/", "/grpc.health.v1.Health/", ...), or one that
// a mux inside those handlers registers and sets as the request's pattern
// (the health handler's "/grpc.health.v1.Health/Check").
func IsRoute(pattern string) bool { return routes[pattern] || procedures[pattern] }

// Procedure returns the procedure label of a call's URL path: the path
// itself for a procedure the face serves ("/drover.v1.JobService/Enqueue"),
// else UnknownProcedure.
func Procedure(path string) string {
	if procedures[path] {
		return path
	}
	return UnknownProcedure
}

// CallStatus carries a call's gRPC code from the face's outermost
// interceptor to whoever put it in the call's context (WithCallStatus):
// the server's metrics, which read it once the handler has returned.
type CallStatus struct {
	code connect.Code
	set  bool
}

type callStatusKey struct{}

// WithCallStatus returns a context whose calls of the face record their
// code in the returned CallStatus. Read it only after the handler has
// returned.
func WithCallStatus(ctx context.Context) (context.Context, *CallStatus) {
	cs := new(CallStatus)
	return context.WithValue(ctx, callStatusKey{}, cs), cs
}

func recordStatus(ctx context.Context, err error) {
	cs, ok := ctx.Value(callStatusKey{}).(*CallStatus)
	if !ok {
		return
	}
	cs.set = true
	cs.code = 0
	if err != nil {
		cs.code = connect.CodeOf(err)
	}
}

// Code returns the gRPC code of a call as its client saw it, as a label
// value in gRPC's spelling ("OK", "NOT_FOUND", "RESOURCE_EXHAUSTED"),
// from the response's status, its header map after the handler returned
// (which holds the trailers too), and what the interceptor recorded:
//
//   - a grpc-status sent in the headers or trailers (gRPC, and gRPC-Web's
//     trailers-only responses) is the answer;
//   - else the code that the interceptor recorded, unless the HTTP status
//     says that Connect failed the call after the handler returned (a
//     response over its size limit);
//   - else, for a call that Connect refused before any handler ran (a
//     malformed or oversized message, an unknown method), the code that
//     the HTTP status implies: 200 is OK, and an error status maps as the
//     Connect protocol maps codes to statuses (400 INVALID_ARGUMENT, 404
//     UNIMPLEMENTED, 429 RESOURCE_EXHAUSTED, ...).
//
// cs may be nil.
func (cs *CallStatus) Code(status int, header http.Header) string {
	for _, key := range []string{"Grpc-Status", http.TrailerPrefix + "Grpc-Status"} {
		if v := header[key]; len(v) > 0 {
			if n, err := strconv.ParseUint(v[0], 10, 32); err == nil {
				return codeLabel(connect.Code(n))
			}
		}
	}
	if cs != nil && cs.set && (cs.code != 0 || status == http.StatusOK) {
		return codeLabel(cs.code)
	}
	return codeLabel(httpCode(status))
}

// httpCode is the gRPC code that the HTTP status of a Connect protocol
// response implies, the reverse of the Connect protocol's table (where
// several codes share a status, the one a refusal before the handler
// gives: a malformed message is INVALID_ARGUMENT).
func httpCode(status int) connect.Code {
	switch status {
	case http.StatusOK:
		return 0
	case 499:
		return connect.CodeCanceled
	case http.StatusBadRequest:
		return connect.CodeInvalidArgument
	case http.StatusUnauthorized:
		return connect.CodeUnauthenticated
	case http.StatusForbidden:
		return connect.CodePermissionDenied
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnsupportedMediaType, http.StatusNotImplemented:
		return connect.CodeUnimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return connect.CodeDeadlineExceeded
	case http.StatusConflict:
		return connect.CodeAborted
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return connect.CodeResourceExhausted
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		return connect.CodeUnavailable
	case http.StatusInternalServerError:
		return connect.CodeInternal
	}
	return connect.CodeUnknown
}

// codeLabel spells a code as gRPC does: OK, NOT_FOUND, ...
func codeLabel(c connect.Code) string {
	if c == 0 {
		return "OK"
	}
	return strings.ToUpper(c.String())
}

// statusRecorder is the outermost interceptor of every handler that Mount
// registers: it records the code each call ends with (WithCallStatus).
type statusRecorder struct{}

// WrapUnary implements connect.Interceptor.
func (statusRecorder) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		recordStatus(ctx, err)
		return res, err
	}
}

// WrapStreamingClient implements connect.Interceptor; the face has no
// clients.
func (statusRecorder) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler implements connect.Interceptor.
func (statusRecorder) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		err := next(ctx, conn)
		recordStatus(ctx, err)
		return err
	}
}
