package graphqlapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/job"
)

// operations gives the auth operation of every root field, so that the
// scope a field needs comes from the one table of auth.Op.Scope. A root
// field missing here needs admin (and TestGraphQLScopeMatrix fails).
var operations = map[string]auth.Op{
	"Query.job":              auth.OpGetJob,
	"Query.jobs":             auth.OpListJobs,
	"Query.queues":           auth.OpListQueues,
	"Query.stats":            auth.OpListQueues,
	"Mutation.enqueue":       auth.OpEnqueue,
	"Mutation.enqueueBatch":  auth.OpEnqueueBatch,
	"Mutation.cancelJob":     auth.OpCancelJob,
	"Mutation.retryJob":      auth.OpRetryJob,
	"Mutation.deleteJob":     auth.OpDeleteJob,
	"Mutation.pauseQueue":    auth.OpPauseQueue,
	"Mutation.resumeQueue":   auth.OpResumeQueue,
	"Mutation.leaseJobs":     auth.OpLease,
	"Mutation.heartbeatJob":  auth.OpHeartbeat,
	"Mutation.completeJob":   auth.OpComplete,
	"Mutation.failJob":       auth.OpFail,
	"Mutation.snoozeJob":     auth.OpSnooze,
	"Subscription.jobEvents": auth.OpSubscribe,
}

// Operation returns the auth operation of a root field, named as
// "Query.jobs" or "Mutation.enqueue", and false for one it does not know.
func Operation(field string) (auth.Op, bool) {
	op, ok := operations[field]
	return op, ok
}

// longFields mostly wait: admission counts their operations among the
// long polls, as REST counts lease calls.
var longFields = map[string]bool{"leaseJobs": true}

type authorizationKey struct{}

// withAuthorization records the Authorization value that the request (or
// the WebSocket's connection_init) carried.
func withAuthorization(ctx context.Context, v string) context.Context {
	return context.WithValue(ctx, authorizationKey{}, v)
}

func authorization(ctx context.Context) string {
	v, _ := ctx.Value(authorizationKey{}).(string)
	return v
}

// rootField is the field middleware: for a root field it checks the
// caller's token against the scope of the field's operation and marks
// the resolver's error as one to map through the error table. Other
// fields read what their parent resolved and pass through, and so does
// introspection, which needs no token.
func (a *API) rootField(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if fc == nil || !isRoot(fc.Object) {
		return next(ctx)
	}
	if strings.HasPrefix(fc.Field.Name, "__") {
		// Introspection (__schema, __type) describes the public schema,
		// as /openapi.json describes REST's: it needs no token. It can be
		// turned off (Options.Introspection).
		return next(ctx)
	}
	if a.opts.Auth != nil {
		op, ok := operations[fc.Object+"."+fc.Field.Name]
		need := auth.ScopeAdmin
		if ok {
			need = op.Scope()
		}
		who, authed, err := a.opts.Auth.Check(ctx, authorization(ctx), need)
		if err != nil {
			return nil, &resolverError{err}
		}
		if authed {
			ctx = auth.WithPrincipal(ctx, who)
		}
	}
	res, err := next(ctx)
	if err != nil {
		return res, &resolverError{err}
	}
	return res, nil
}

func isRoot(object string) bool {
	return object == "Query" || object == "Mutation" || object == "Subscription"
}

// wsInit takes the token from connection_init's payload, where browsers
// must put it (they cannot set headers on a WebSocket), else from the
// upgrade request's Authorization header. A token that is not valid
// ends the connection at once (close code 4403), so that a client learns
// of a bad token before it subscribes; scopes are checked per operation.
func (a *API) wsInit(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	if v := payload.Authorization(); v != "" {
		ctx = withAuthorization(ctx, v)
	}
	if a.opts.Auth != nil {
		if _, _, err := a.opts.Auth.Check(ctx, authorization(ctx), auth.ScopeRead); err != nil {
			code, reason := 4500, "internal error"
			if errors.Is(err, auth.ErrUnauthenticated) || errors.Is(err, auth.ErrForbidden) {
				code, reason = 4403, "Forbidden: "+err.Error()
			} else {
				a.log.ErrorContext(ctx, "graphql websocket init failed", "err", err)
			}
			if len(reason) > 120 { // a close reason has at most 123 bytes
				reason = reason[:120]
			}
			ctx = transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, code), reason)
			return ctx, nil, errors.New(reason)
		}
	}
	return ctx, nil, nil
}

type connSubsKey struct{}

// connSubs counts the subscriptions of one WebSocket connection.
type connSubs struct {
	mu  sync.Mutex
	n   int
	max int
}

// waitIdle waits until the connection holds no subscription, ctx ends,
// or grace passes.
func (c *connSubs) waitIdle(ctx context.Context, grace time.Duration) {
	deadline := time.Now().Add(grace)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := c.n
		c.mu.Unlock()
		if n == 0 {
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (c *connSubs) acquire() (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.n >= c.max {
		return nil, fmt.Errorf("this connection already has %d subscriptions, its limit: end one or open another connection: %w", c.n, job.ErrOverloaded)
	}
	c.n++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			c.n--
			c.mu.Unlock()
		})
	}, nil
}

// admit is the operation middleware: admission control (shared with the
// other faces) and the per-connection subscription limit. The slot is
// held until the operation's context ends: the request for a query or
// mutation, the subscription's own context for a subscription.
func (a *API) admit(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	oc := graphql.GetOperationContext(ctx)
	var releases []func()
	releaseAll := func() {
		for _, r := range releases {
			r()
		}
	}
	sub := oc.Operation != nil && oc.Operation.Operation == ast.Subscription
	if oneShot, _ := ctx.Value(oneShotKey{}).(bool); sub && oneShot {
		return a.refuse(ctx, &job.ValidationError{Field: "query", Message: "a subscription needs a stream: a WebSocket (graphql-transport-ws) or server-sent events (Accept: text/event-stream)"})
	}
	if sub {
		if c, ok := ctx.Value(connSubsKey{}).(*connSubs); ok {
			r, err := c.acquire()
			if err != nil {
				return a.refuse(ctx, err)
			}
			releases = append(releases, r)
		}
	}
	if a.opts.Admit != nil {
		r, err := a.opts.Admit(sub || hasLongField(oc))
		if err != nil {
			releaseAll()
			return a.refuse(ctx, err)
		}
		releases = append(releases, r)
	}
	if len(releases) > 0 {
		var once sync.Once
		context.AfterFunc(ctx, func() { once.Do(releaseAll) })
	}
	if sub {
		ctx = context.WithValue(ctx, streamEndKey{}, &streamEnd{})
	}
	return next(ctx)
}

func hasLongField(oc *graphql.OperationContext) bool {
	if oc.Operation == nil {
		return false
	}
	for _, sel := range oc.Operation.SelectionSet {
		if f, ok := sel.(*ast.Field); ok && longFields[f.Name] {
			return true
		}
	}
	return false
}

// refuse answers an operation with one error, before it runs.
func (a *API) refuse(ctx context.Context, err error) graphql.ResponseHandler {
	return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{a.presentError(ctx, &resolverError{err})}})
}
