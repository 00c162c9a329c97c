package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/job"
)

// AdmissionLimits are the limits that Admission enforces. Zero values
// take the defaults given with each field.
type AdmissionLimits struct {
	// MaxRequests bounds the /v1 requests in progress other than lease
	// calls; zero means 512.
	MaxRequests int
	// MaxLeases bounds the lease calls (long polls) in progress; zero
	// means 10,000.
	MaxLeases int
	// MaxBytes bounds the request bodies in progress, counted by their
	// Content-Length when the request is admitted; zero means no bound.
	// One body larger than MaxBytes is admitted alone.
	MaxBytes int64
	// UnknownLengthBytes is what a body of unknown length (chunked)
	// counts against MaxBytes: the largest body a route accepts. Zero
	// means MaxBytes.
	UnknownLengthBytes int64
	// MaxLiveHeap, when positive, refuses requests while the Go heap that
	// survived the last garbage collection, plus goroutine stacks, is
	// above it: the server stops taking work before it outgrows its
	// memory limit.
	MaxLiveHeap int64
}

// Admission limits the requests in progress so that an overloaded server
// refuses work with 429 and Retry-After instead of queueing it without
// bound. Long-poll leases, which mostly wait, have their own limit. It
// also bounds the request bytes in progress and, optionally, refuses work
// while memory is short. It is safe for concurrent use.
type Admission struct {
	requests chan struct{}
	leases   chan struct{}

	maxBytes     int64
	unknownBytes int64
	bytes        atomic.Int64 // body bytes of the admitted requests

	mem *liveHeap // nil without MaxLiveHeap
}

// NewAdmission returns an Admission that enforces l.
func NewAdmission(l AdmissionLimits) *Admission {
	if l.MaxRequests <= 0 {
		l.MaxRequests = 512
	}
	if l.MaxLeases <= 0 {
		l.MaxLeases = 10_000
	}
	if l.UnknownLengthBytes <= 0 || l.UnknownLengthBytes > l.MaxBytes {
		l.UnknownLengthBytes = l.MaxBytes
	}
	a := &Admission{
		requests:     make(chan struct{}, l.MaxRequests),
		leases:       make(chan struct{}, l.MaxLeases),
		maxBytes:     l.MaxBytes,
		unknownBytes: l.UnknownLengthBytes,
	}
	if l.MaxLiveHeap > 0 {
		a.mem = newLiveHeap(l.MaxLiveHeap)
	}
	return a
}

// Wrap returns next behind the admission limits. Health checks, metrics
// and the API document are always admitted.
func (a *Admission) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		if a.mem != nil && a.mem.over() {
			overloaded(w, "the server is near its memory limit; retry after the time in Retry-After")
			return
		}
		slots := a.requests
		if r.URL.Path == "/v1/lease" {
			slots = a.leases
		}
		select {
		case slots <- struct{}{}:
		default:
			overloaded(w, "the server is at its limit of requests in progress; retry after the time in Retry-After")
			return
		}
		defer func() { <-slots }()
		n, ok := a.reserve(r)
		if !ok {
			overloaded(w, "the server is at its limit of request bytes in progress; retry after the time in Retry-After")
			return
		}
		defer a.bytes.Add(-n)
		next.ServeHTTP(w, r)
	})
}

// reserve counts r's body against MaxBytes and returns what it counted,
// or false when that would pass the limit.
func (a *Admission) reserve(r *http.Request) (int64, bool) {
	if a.maxBytes <= 0 {
		return 0, true
	}
	n := r.ContentLength
	if n < 0 {
		n = a.unknownBytes
	}
	n = min(n, a.maxBytes) // a body larger than the limit goes alone
	if n == 0 {
		return 0, true
	}
	for {
		cur := a.bytes.Load()
		if cur+n > a.maxBytes {
			return 0, false
		}
		if a.bytes.CompareAndSwap(cur, cur+n) {
			return n, true
		}
	}
}

// Admit admits one call of another face (gRPC) against the same limits
// as Wrap: the memory guard, then a slot among the requests in progress
// (long: among the lease calls, for calls that mostly wait). It returns a
// release to call when the call ends, or an error matching
// job.ErrOverloaded. Request bytes are not counted here: a gRPC message
// has no declared length, and each face bounds its messages itself.
func (a *Admission) Admit(long bool) (release func(), err error) {
	if a.mem != nil && a.mem.over() {
		return nil, fmt.Errorf("the server is near its memory limit: %w", job.ErrOverloaded)
	}
	slots := a.requests
	if long {
		slots = a.leases
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	default:
		return nil, fmt.Errorf("the server is at its limit of requests in progress: %w", job.ErrOverloaded)
	}
}

func overloaded(w http.ResponseWriter, detail string) {
	p := newProblem(http.StatusTooManyRequests, "overloaded", detail)
	p.headers = http.Header{"Retry-After": []string{"1"}}
	writeProblem(w, p)
}

// liveHeapEvery is how often liveHeap reads the runtime's figures: often
// enough to follow a garbage collection, rarely enough to cost nothing.
const liveHeapEvery = 50 * time.Millisecond

// liveHeap tells whether the heap live after the last garbage collection,
// plus goroutine stacks, is above a limit. It reads the runtime's metrics
// at most every liveHeapEvery; callers in between get the last answer.
type liveHeap struct {
	limit  uint64
	next   atomic.Int64 // UnixNano of the next read
	isOver atomic.Bool

	mu      sync.Mutex // held while reading; TryLock so callers never wait
	samples []metrics.Sample
}

func newLiveHeap(limit int64) *liveHeap {
	return &liveHeap{limit: uint64(limit), samples: []metrics.Sample{ //nolint:gosec // limit is positive
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/stacks:bytes"},
	}}
}

func (h *liveHeap) over() bool {
	now := time.Now().UnixNano()
	if now >= h.next.Load() && h.mu.TryLock() {
		metrics.Read(h.samples)
		var live uint64
		for _, s := range h.samples {
			if s.Value.Kind() == metrics.KindUint64 {
				live += s.Value.Uint64()
			}
		}
		h.isOver.Store(live > h.limit)
		h.next.Store(now + int64(liveHeapEvery))
		h.mu.Unlock()
	}
	return h.isOver.Load()
}

func jsonEncode(w http.ResponseWriter, v any) {
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}
