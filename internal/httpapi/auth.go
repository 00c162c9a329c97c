package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Authenticator checks bearer tokens and scopes on every /v1 request once
// any token exists in the store; before that (a fresh install, which only
// listens on loopback) the API is open. Tokens are looked up by id and
// their secrets compared in constant time; lookups are cached for
// CacheFor, so a revocation takes effect within that time.
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

type principalKey struct{}

// Principal is who made a request: the token's id and scope.
type Principal struct {
	TokenID int64
	Scope   auth.Scope
}

// Name is how jobs record their creator: "token:ID".
func (p Principal) Name() string { return "token:" + strconv.FormatInt(p.TokenID, 10) }

// PrincipalFrom returns who made the request, when tokens are enforced.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Wrap returns next behind the token check for /v1 routes.
func (a *Authenticator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		on, err := a.Enforced(r.Context())
		if err != nil {
			writeProblem(w, problemOf(err))
			return
		}
		if !on {
			next.ServeHTTP(w, r)
			return
		}
		who, p := a.check(r)
		if p != nil {
			if p.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="drover"`)
			}
			writeProblem(w, p)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, who)))
	})
}

// check authenticates r and authorizes its route.
func (a *Authenticator) check(r *http.Request) (Principal, *Problem) {
	h := r.Header.Get("Authorization")
	raw, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || raw == "" {
		return Principal{}, newProblem(http.StatusUnauthorized, "unauthorized", "a bearer token is required: Authorization: Bearer drv_...")
	}
	id, secret, err := auth.Parse(strings.TrimSpace(raw))
	if err != nil {
		return Principal{}, newProblem(http.StatusUnauthorized, "unauthorized", "the bearer token is not a Drover token")
	}
	rec, err := a.token(r.Context(), id)
	if err != nil {
		return Principal{}, problemOf(err)
	}
	// The same refusal for unknown, revoked and wrong tokens, so that the
	// answer tells an attacker nothing about which ids exist.
	if rec == nil || rec.RevokedAt != nil || !auth.Verify(secret, rec.Hash) {
		return Principal{}, newProblem(http.StatusUnauthorized, "unauthorized", "the bearer token is unknown or revoked")
	}
	scope, err := auth.ParseScope(rec.Scope)
	if err != nil {
		return Principal{}, newProblem(http.StatusUnauthorized, "unauthorized", "the bearer token has an unknown scope")
	}
	need := NeededScope(r.Method, r.URL.Path)
	if !scope.Allows(need) {
		return Principal{}, newProblem(http.StatusForbidden, "forbidden", "this call needs the "+string(need)+" scope; the token has "+string(scope))
	}
	return Principal{TokenID: id, Scope: scope}, nil
}

// NeededScope is the scope a /v1 call needs: reading needs read (which
// every token has), enqueueing producer, leasing and settling worker, and
// everything else (operator actions) admin.
func NeededScope(method, path string) auth.Scope {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[1] == "tokens":
		return auth.ScopeAdmin
	case method == http.MethodGet:
		return auth.ScopeRead
	case method == http.MethodPost && path == "/v1/jobs", method == http.MethodPost && path == "/v1/jobs/batch":
		return auth.ScopeProducer
	case method == http.MethodPost && path == "/v1/lease":
		return auth.ScopeWorker
	case method == http.MethodPost && len(parts) == 4 && parts[1] == "jobs":
		switch parts[3] {
		case "heartbeat", "complete", "fail", "snooze":
			return auth.ScopeWorker
		}
	}
	return auth.ScopeAdmin
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	for k, vs := range p.headers {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	jsonEncode(w, p)
}
