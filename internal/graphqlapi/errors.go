package graphqlapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/job"
)

// The extensions of an error.
const (
	// CodeExtension holds the stable code of the shared error table
	// (not_found, lease_lost, ...), the same as REST's problem code and
	// gRPC's ErrorInfo reason.
	CodeExtension = "code"
	// FieldExtension names the invalid input of an invalid_argument.
	FieldExtension = "field"
	// RetryAfterExtension holds, in seconds, how long to wait before
	// retrying a temporary refusal (overloaded, unavailable), as REST's
	// Retry-After header does.
	RetryAfterExtension = "retry_after"
)

// The codes of refusals of a document before it runs, in gqlgen's style
// for such refusals (gqlgen's own are GRAPHQL_PARSE_FAILED,
// GRAPHQL_VALIDATION_FAILED and COMPLEXITY_LIMIT_EXCEEDED).
const (
	// CodeDepthLimit: selections nest deeper than the limit.
	CodeDepthLimit = "DEPTH_LIMIT_EXCEEDED"
	// CodeAliasLimit: the document has more aliases than the limit.
	CodeAliasLimit = "ALIAS_LIMIT_EXCEEDED"
	// CodeIntrospectionDisabled: introspection is turned off.
	CodeIntrospectionDisabled = "INTROSPECTION_DISABLED"
)

// resolverError marks an error of a root field (a resolver's, or a
// refusal of the token check or admission): the error table maps it. An
// error without this mark was made by gqlgen while it read the
// operation's input (an argument of the wrong type or value), and is
// invalid_argument.
type resolverError struct{ err error }

func (e *resolverError) Error() string { return e.err.Error() }
func (e *resolverError) Unwrap() error { return e.err }

// presentError gives every error its extensions: the stable code, the
// invalid field, the retry time. Internal errors are logged in full and
// shown as "internal error".
func (a *API) presentError(ctx context.Context, err error) *gqlerror.Error {
	gerr := graphql.DefaultErrorPresenter(ctx, err)
	if _, ok := gerr.Extensions[CodeExtension]; ok {
		return gerr // gqlgen's own refusals, already coded
	}
	out := *gerr // gqlgen may share the error it returned; change a copy
	ext := make(map[string]any, len(gerr.Extensions)+3)
	for k, v := range gerr.Extensions {
		ext[k] = v
	}
	out.Extensions = ext
	code := "invalid_argument"
	var re *resolverError
	if errors.As(err, &re) {
		e := errcode.Of(re.err)
		code = e.Code
		switch {
		case errors.Is(re.err, context.Canceled), errors.Is(re.err, context.DeadlineExceeded):
			// The client went away or gave up: nothing to log.
			out.Message = re.err.Error()
		case code == errcode.Internal:
			a.log.ErrorContext(ctx, "graphql request failed", "path", graphql.GetPath(ctx).String(), "err", re.err)
			out.Message = "internal error"
		default:
			out.Message = re.err.Error()
		}
		if e.RetryAfter > 0 {
			ext[RetryAfterExtension] = int(e.RetryAfter.Seconds())
		}
	}
	ext[CodeExtension] = code
	var ve *job.ValidationError
	switch {
	case errors.As(err, &ve) && ve.Field != "":
		ext[FieldExtension] = ve.Field
	case re == nil:
		// gqlgen refused an argument: its path, after the root field,
		// names the argument ("input.unique.period").
		if f := argumentPath(gerr.Path); f != "" {
			ext[FieldExtension] = f
		}
	}
	return &out
}

// argumentPath renders the part of an argument error's path after its
// field: input.tags[2].
func argumentPath(p ast.Path) string {
	var b strings.Builder
	for i, el := range p {
		if i == 0 {
			continue
		}
		switch el := el.(type) {
		case ast.PathName:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(string(el))
		case ast.PathIndex:
			fmt.Fprintf(&b, "[%d]", int(el))
		}
	}
	return b.String()
}

// recoverPanic turns a resolver's panic into an internal error; the
// panic is logged with presentError's log line.
func (a *API) recoverPanic(_ context.Context, p any) error {
	return &resolverError{fmt.Errorf("panic in a resolver: %v", p)}
}

// requestError is an error of a whole request, before GraphQL runs.
func requestError(code, msg string) *gqlerror.Error {
	return &gqlerror.Error{Message: msg, Extensions: map[string]any{CodeExtension: code}}
}

// writeErrors answers a request with a GraphQL response of errors alone.
func writeErrors(w http.ResponseWriter, status int, errs ...*gqlerror.Error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(&graphql.Response{Errors: errs}) //nolint:errcheck // the client went away
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

type streamEndKey struct{}

// streamEnd carries the error that ended a subscription's stream (a
// subscriber dropped for being slow, a server that stops) from the
// resolver, which closes its channel, to endOfStream, which answers it as
// the stream's last message.
type streamEnd struct {
	mu       sync.Mutex
	err      error
	reported bool
}

func (s *streamEnd) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

// take returns the error once.
func (s *streamEnd) take() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reported || s.err == nil {
		return nil
	}
	s.reported = true
	return s.err
}

// endOfStream is the response middleware: when a subscription's stream
// ends with an error, it answers one more message carrying that error
// (with its code: overloaded for a slow subscriber) before the end, over
// WebSocket and SSE alike.
func (a *API) endOfStream(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp != nil {
		return resp
	}
	end, ok := ctx.Value(streamEndKey{}).(*streamEnd)
	if !ok {
		return nil
	}
	if err := end.take(); err != nil {
		gerr := a.presentError(ctx, &resolverError{err})
		gerr.Path = ast.Path{ast.PathName("jobEvents")}
		return &graphql.Response{Errors: gqlerror.List{gerr}}
	}
	return nil
}
