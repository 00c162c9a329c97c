package httpapi

import (
	"net/http"
	"strings"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/store"
)

// Authenticator is the REST face's token check: auth.Authenticator
// applied to every /v1 request, with the scope that NeededScope gives.
// Before any token exists (a fresh install, which only listens on
// loopback) the API is open.
type Authenticator struct {
	*auth.Authenticator
}

// NewAuthenticator returns an Authenticator over the tokens in st.
func NewAuthenticator(st store.Store) *Authenticator {
	return &Authenticator{Authenticator: auth.NewAuthenticator(st)}
}

// Wrap returns next behind the token check for /v1 routes. The handlers
// find who called with auth.PrincipalFrom.
func (a *Authenticator) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		who, ok, err := a.Check(r.Context(), r.Header.Get("Authorization"), NeededScope(r.Method, r.URL.Path))
		if err != nil {
			p := problemOf(err)
			if p.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="drover"`)
			}
			writeProblem(w, p)
			return
		}
		if ok {
			r = r.WithContext(auth.WithPrincipal(r.Context(), who))
		}
		next.ServeHTTP(w, r)
	})
}

// NeededScope is the scope a /v1 call needs: the scope of its operation
// in the one table of auth.Op.Scope. A GET that names no operation needs
// read (it is answered 404), anything else unknown admin.
func NeededScope(method, path string) auth.Scope {
	if op, ok := operationOf(method, path); ok {
		return op.Scope()
	}
	if method == http.MethodGet {
		return auth.ScopeRead
	}
	return auth.ScopeAdmin
}

// operationOf names the operation of a /v1 route.
func operationOf(method, path string) (auth.Op, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) >= 2 && parts[1] == "tokens" {
		return auth.OpTokens, true
	}
	switch {
	case len(parts) == 2 && parts[1] == "jobs":
		switch method {
		case http.MethodGet:
			return auth.OpListJobs, true
		case http.MethodPost:
			return auth.OpEnqueue, true
		}
	case len(parts) == 3 && parts[1] == "jobs" && parts[2] == "batch" && method == http.MethodPost:
		return auth.OpEnqueueBatch, true
	case len(parts) == 3 && parts[1] == "jobs":
		switch method {
		case http.MethodGet:
			return auth.OpGetJob, true
		case http.MethodDelete:
			return auth.OpDeleteJob, true
		}
	case len(parts) == 4 && parts[1] == "jobs" && method == http.MethodPost:
		if op, ok := jobActions[parts[3]]; ok {
			return op, true
		}
	case len(parts) == 2 && parts[1] == "lease" && method == http.MethodPost:
		return auth.OpLease, true
	case len(parts) == 2 && parts[1] == "queues" && method == http.MethodGet:
		return auth.OpListQueues, true
	case len(parts) == 4 && parts[1] == "queues" && method == http.MethodPost:
		switch parts[3] {
		case "pause":
			return auth.OpPauseQueue, true
		case "resume":
			return auth.OpResumeQueue, true
		}
	}
	return "", false
}

// jobActions are the operations of POST /v1/jobs/{id}/ACTION.
var jobActions = map[string]auth.Op{
	"cancel": auth.OpCancelJob, "retry": auth.OpRetryJob,
	"heartbeat": auth.OpHeartbeat, "complete": auth.OpComplete, "fail": auth.OpFail, "snooze": auth.OpSnooze,
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
