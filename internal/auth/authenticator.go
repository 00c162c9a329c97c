package auth

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Op names one API operation, the same in every face: REST maps its
// routes to these, gRPC its procedures, GraphQL its fields. The scope an
// operation needs is in one table, Op.Scope.
type Op string

// The operations.
const (
	OpEnqueue      Op = "enqueue"
	OpEnqueueBatch Op = "enqueue_batch"
	OpGetJob       Op = "get_job"
	OpListJobs     Op = "list_jobs"
	OpCancelJob    Op = "cancel_job"
	OpRetryJob     Op = "retry_job"
	OpDeleteJob    Op = "delete_job"
	OpLease        Op = "lease"
	OpHeartbeat    Op = "heartbeat"
	OpComplete     Op = "complete"
	OpFail         Op = "fail"
	OpSnooze       Op = "snooze"
	OpWork         Op = "work"
	OpListQueues   Op = "list_queues"
	OpPauseQueue   Op = "pause_queue"
	OpResumeQueue  Op = "resume_queue"
	OpSubscribe    Op = "subscribe"
	OpTokens       Op = "tokens"
)

// opScopes is the one table of who may call what: reading needs read
// (which every token has), enqueueing producer, leasing and settling
// worker, and operator actions and tokens admin. An operation missing
// here needs admin.
var opScopes = map[Op]Scope{
	OpEnqueue:      ScopeProducer,
	OpEnqueueBatch: ScopeProducer,
	OpGetJob:       ScopeRead,
	OpListJobs:     ScopeRead,
	OpCancelJob:    ScopeAdmin,
	OpRetryJob:     ScopeAdmin,
	OpDeleteJob:    ScopeAdmin,
	OpLease:        ScopeWorker,
	OpHeartbeat:    ScopeWorker,
	OpComplete:     ScopeWorker,
	OpFail:         ScopeWorker,
	OpSnooze:       ScopeWorker,
	OpWork:         ScopeWorker,
	OpListQueues:   ScopeRead,
	OpPauseQueue:   ScopeAdmin,
	OpResumeQueue:  ScopeAdmin,
	OpSubscribe:    ScopeRead,
	OpTokens:       ScopeAdmin,
}

// Scope returns the scope that op needs; an unknown operation needs
// admin.
func (op Op) Scope() Scope {
	if s, ok := opScopes[op]; ok {
		return s
	}
	return ScopeAdmin
}

// Sentinels of the refusals, matched by the *Error that Check returns.
var (
	// ErrUnauthenticated: no valid bearer token.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the token's scope does not allow the operation.
	ErrForbidden = errors.New("forbidden")
)

// Error is a refusal by Check. It matches ErrForbidden when Forbidden is
// set, ErrUnauthenticated otherwise.
type Error struct {
	Forbidden bool
	// Message says why, for people.
	Message string
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

// Is reports whether target is the sentinel of e's kind.
func (e *Error) Is(target error) bool {
	if e.Forbidden {
		return target == ErrForbidden
	}
	return target == ErrUnauthenticated
}

// Principal is who made a request: the token's id and scope.
type Principal struct {
	TokenID int64
	Scope   Scope
}

// Name is how jobs record their creator: "token:ID".
func (p Principal) Name() string { return "token:" + strconv.FormatInt(p.TokenID, 10) }

// ReadsOwnJobsOnly reports whether p may read only the jobs it enqueued:
// producers do; a job of another producer is answered as not found, so
// that they learn nothing about it, not even that it exists.
func (p Principal) ReadsOwnJobsOnly() bool { return p.Scope == ScopeProducer }

type principalKey struct{}

// WithPrincipal returns ctx carrying who made the request.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns who made the request, when tokens are enforced.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Authenticator checks bearer tokens and scopes for every face once any
// token exists in the store; before that (a fresh install, which only
// listens on loopback) the API is open. Tokens are looked up by id and
// their secrets compared in constant time; lookups are cached for
// CacheFor, so a revocation takes effect within that time. It is safe for
// concurrent use.
type Authenticator struct {
	st       store.Store
	now      func() time.Time
	cacheFor time.Duration

	mu       sync.Mutex
	enforced bool
	checked  time.Time
	tokens   map[int64]cachedToken
}

type cachedToken struct {
	rec *store.TokenRecord
	at  time.Time
}

// NewAuthenticator returns an Authenticator over the tokens in st.
func NewAuthenticator(st store.Store) *Authenticator {
	return &Authenticator{st: st, now: time.Now, cacheFor: 5 * time.Second, tokens: map[int64]cachedToken{}}
}

// Enforced reports whether tokens are required: whether the store holds
// any token record, revoked or not. Once a token was created, the API
// never falls back to open, even if every token is revoked.
func (a *Authenticator) Enforced(ctx context.Context) (bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.enforced || a.now().Sub(a.checked) < a.cacheFor {
		return a.enforced, nil
	}
	ts, err := a.st.ListTokens(ctx)
	if err != nil {
		return false, err
	}
	a.enforced, a.checked = len(ts) > 0, a.now()
	return a.enforced, nil
}

func (a *Authenticator) token(ctx context.Context, id int64) (*store.TokenRecord, error) {
	a.mu.Lock()
	c, ok := a.tokens[id]
	a.mu.Unlock()
	if ok && a.now().Sub(c.at) < a.cacheFor {
		return c.rec, nil
	}
	rec, err := a.st.GetToken(ctx, id)
	if err != nil && !errors.Is(err, job.ErrNotFound) {
		return nil, err
	}
	a.mu.Lock()
	if len(a.tokens) > 10_000 {
		clear(a.tokens) // bounded: a flood of made-up ids cannot grow it
	}
	a.tokens[id] = cachedToken{rec: rec, at: a.now()}
	a.mu.Unlock()
	return rec, nil
}

// Check authenticates the bearer token in authorization (the value of an
// Authorization header or metadata entry) and checks that its scope
// allows need (for an operation, op.Scope()). With tokens
// not enforced it returns ok false and no error: the call goes on
// without a principal. Refusals are *Error; other errors are the
// store's.
func (a *Authenticator) Check(ctx context.Context, authorization string, need Scope) (who Principal, ok bool, err error) {
	on, err := a.Enforced(ctx)
	if err != nil || !on {
		return Principal{}, false, err
	}
	raw, found := strings.CutPrefix(authorization, "Bearer ")
	if !found || raw == "" {
		return Principal{}, false, &Error{Message: "a bearer token is required: Authorization: Bearer drv_..."}
	}
	id, secret, err := Parse(strings.TrimSpace(raw))
	if err != nil {
		return Principal{}, false, &Error{Message: "the bearer token is not a Drover token"}
	}
	rec, err := a.token(ctx, id)
	if err != nil {
		return Principal{}, false, err
	}
	// The same refusal for unknown, revoked and wrong tokens, so that the
	// answer tells an attacker nothing about which ids exist.
	if rec == nil || rec.RevokedAt != nil || !Verify(secret, rec.Hash) {
		return Principal{}, false, &Error{Message: "the bearer token is unknown or revoked"}
	}
	scope, err := ParseScope(rec.Scope)
	if err != nil {
		return Principal{}, false, &Error{Message: "the bearer token has an unknown scope"}
	}
	if !scope.Allows(need) {
		return Principal{}, false, &Error{Forbidden: true, Message: "this call needs the " + string(need) + " scope; the token has " + string(scope)}
	}
	return Principal{TokenID: id, Scope: scope}, true, nil
}
