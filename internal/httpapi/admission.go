package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Admission limits the requests in progress so that an overloaded server
// refuses work with 429 and Retry-After instead of queueing it without
// bound. Long-poll leases, which mostly wait, have their own limit.
type Admission struct {
	requests chan struct{}
	leases   chan struct{}
}

// NewAdmission admits at most maxRequests requests and, separately,
// maxLeases lease calls at once. Zero means 512 and 10,000.
func NewAdmission(maxRequests, maxLeases int) *Admission {
	if maxRequests <= 0 {
		maxRequests = 512
	}
	if maxLeases <= 0 {
		maxLeases = 10_000
	}
	return &Admission{requests: make(chan struct{}, maxRequests), leases: make(chan struct{}, maxLeases)}
}

// Wrap returns next behind the admission limits. Health checks, metrics
// and the API document are always admitted.
func (a *Admission) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		slots := a.requests
		if r.URL.Path == "/v1/lease" {
			slots = a.leases
		}
		select {
		case slots <- struct{}{}:
		default:
			overloaded(w)
			return
		}
		defer func() { <-slots }()
		next.ServeHTTP(w, r)
	})
}

func overloaded(w http.ResponseWriter) {
	p := newProblem(http.StatusTooManyRequests, "overloaded", "the server is at its limit of requests in progress; retry after the time in Retry-After")
	p.headers = http.Header{"Retry-After": []string{"1"}}
	writeProblem(w, p)
}

func jsonEncode(w http.ResponseWriter, v any) {
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
