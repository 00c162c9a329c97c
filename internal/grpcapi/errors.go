package grpcapi

import (
	"context"
	"errors"
	"strconv"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/job"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo detail that every
// error carries; its reason is the stable code (lease_lost, not_found,
// ...), the same as REST's problem code.
const ErrorDomain = "drover"

// CodeHeader is the response metadata key (a trailer in gRPC, a header in
// Connect's unary protocol) that carries the stable code of an error, for
// clients that do not decode error details.
const CodeHeader = "drover-code"

// RetryAfterHeader carries, in seconds, how long to wait before retrying
// a temporary refusal (overload), as REST's Retry-After header does; the
// google.rpc.RetryInfo detail says the same.
const RetryAfterHeader = "retry-after"

// toError turns an error into the Connect error the client sees, with the
// gRPC code of the one error table (errcode) and details: ErrorInfo with
// the stable code, BadRequest naming an invalid field, RetryInfo on a
// temporary refusal. Internal errors are logged in full and shown as
// "internal error". An error that is already a *connect.Error (from
// Connect itself: a malformed message, one over its size limit) is
// returned as it is.
func (a *API) toError(ctx context.Context, procedure string, err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	e := errcode.Of(err)
	msg := err.Error()
	if e.Code == errcode.Internal {
		a.log.ErrorContext(ctx, "request failed", "procedure", procedure, "err", err)
		msg = "internal error"
	}
	ce = connect.NewError(e.GRPC, errors.New(msg))
	ce.Meta().Set(CodeHeader, e.Code)
	addDetail(ce, &errdetails.ErrorInfo{Reason: e.Code, Domain: ErrorDomain})
	var ve *job.ValidationError
	if errors.As(err, &ve) {
		addDetail(ce, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: ve.Field, Description: ve.Message},
		}})
	}
	if e.RetryAfter > 0 {
		ce.Meta().Set(RetryAfterHeader, strconv.Itoa(int(e.RetryAfter.Seconds())))
		addDetail(ce, &errdetails.RetryInfo{RetryDelay: durationpb.New(e.RetryAfter)})
	}
	return ce
}

func addDetail(ce *connect.Error, m proto.Message) {
	if d, err := connect.NewErrorDetail(m); err == nil {
		ce.AddDetail(d)
	}
}
