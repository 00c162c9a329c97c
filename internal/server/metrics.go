package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// metrics holds the server's Prometheus registry and its HTTP and gRPC
// instruments. Queue sizes and store counters are read at scrape time, so
// they cost nothing between scrapes.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	// calls and callDuration count the gRPC face's calls (gRPC, gRPC-Web
	// and Connect), which requests and duration leave out.
	calls        *prometheus.CounterVec
	callDuration *prometheus.HistogramVec
}

// statusClientClosedRequest is the status under which
// drover_http_requests_total counts a request whose client went away
// before it was answered (nginx's 499): its handler failed because the
// call's context ended, which is no failure of the server. No client
// ever sees it.
const statusClientClosedRequest = 499

var durationBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

func newMetrics(eng *engine.Engine) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_http_requests_total",
			Help: "HTTP requests answered, by route pattern, method and status code.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route pattern and method (long-poll leases include their wait).",
			Buckets: durationBuckets,
		}, []string{"route", "method"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_grpc_requests_total",
			Help: "gRPC, gRPC-Web and Connect calls answered, by procedure and gRPC code.",
		}, []string{"procedure", "code"}),
		callDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_grpc_request_duration_seconds",
			Help:    "Time to answer gRPC, gRPC-Web and Connect calls, by procedure (streams and long-poll leases include their wait).",
			Buckets: durationBuckets,
		}, []string{"procedure"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.duration, m.calls, m.callDuration,
		&engineCollector{eng: eng},
	)
	return m
}

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

type routeKey struct{}

// instrument counts and times every request, refused ones included, by the
// route pattern that served it (never by raw path, so ids do not explode
// the label space). The pattern is learnt by capturePattern, which wraps
// the mux itself: the layers between may hand the mux a copy of the
// request.
//
// Calls of the gRPC face (the routes grpcapi.IsRoute names) are counted
// in drover_grpc_requests_total only, by procedure and gRPC code, since
// their HTTP status is 200 whatever the call's outcome. A REST request
// whose client went away before the answer is counted as 499 rather than
// as the 500 its handler answered.
func (m *metrics) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		route := new(string)
		ctx, call := grpcapi.WithCallStatus(context.WithValue(r.Context(), routeKey{}, route))
		next.ServeHTTP(rec, r.WithContext(ctx))
		elapsed := time.Since(start).Seconds()
		if grpcapi.IsRoute(*route) {
			proc := grpcapi.Procedure(r.URL.Path)
			m.calls.WithLabelValues(proc, call.Code(rec.status, rec.Header())).Inc()
			m.callDuration.WithLabelValues(proc).Observe(elapsed)
			return
		}
		if *route == "" {
			*route = "unrouted" // refused before routing (429, 401, 403)
		}
		status := rec.status
		if status >= http.StatusInternalServerError && r.Context().Err() != nil {
			// The request's context ends early only when its client goes
			// away (the server's base context is never cancelled).
			status = statusClientClosedRequest
		}
		m.requests.WithLabelValues(*route, r.Method, strconv.Itoa(status)).Inc()
		m.duration.WithLabelValues(*route, r.Method).Observe(elapsed)
	})
}

// capturePattern records the pattern the mux chose for instrument.
func capturePattern(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r) // sets r.Pattern
		if route, ok := r.Context().Value(routeKey{}).(*string); ok {
			*route = r.Pattern
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Flush implements http.Flusher, which streaming handlers (gRPC, Connect)
// require of the writer itself rather than through Unwrap.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// engineCollector reports the store's job counts per queue and state, the
// waiting lease calls, and the embedded store's writer counters.
type engineCollector struct {
	eng *engine.Engine
}

var (
	jobsDesc     = prometheus.NewDesc("drover_jobs", "Jobs in the store, by queue and state.", []string{"queue", "state"}, nil)
	pausedDesc   = prometheus.NewDesc("drover_queue_paused", "1 when the queue is paused.", []string{"queue"}, nil)
	waitersDesc  = prometheus.NewDesc("drover_lease_waiters", "Lease calls waiting for jobs (long polls).", nil, nil)
	subsDesc     = prometheus.NewDesc("drover_event_subscribers", "Open subscriptions to job events (gRPC EventService, GraphQL, dashboard).", nil, nil)
	requestsDesc = prometheus.NewDesc("drover_store_write_requests_total", "Write requests run by the embedded store's writer.", nil, nil)
	commitsDesc  = prometheus.NewDesc("drover_store_commits_total", "Transactions committed (one fsync each) by the embedded store's writer.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobsDesc, pausedDesc, waitersDesc, subsDesc, requestsDesc, commitsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *engineCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if qs, err := c.eng.Queues(ctx); err == nil {
		for _, q := range qs {
			// Every state, zeros included, so that series do not vanish.
			for _, st := range job.States {
				ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(q.Counts[st]), q.Name, string(st))
			}
			paused := 0.0
			if q.Paused {
				paused = 1
			}
			ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, paused, q.Name)
		}
	}
	ch <- prometheus.MustNewConstMetric(waitersDesc, prometheus.GaugeValue, float64(c.eng.Waiting()))
	ch <- prometheus.MustNewConstMetric(subsDesc, prometheus.GaugeValue, float64(c.eng.Subscribers()))
	if s, ok := c.eng.Store().(*sqlitestore.Store); ok {
		st := s.Stats()
		ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(st.Requests))
		ch <- prometheus.MustNewConstMetric(commitsDesc, prometheus.CounterValue, float64(st.Commits))
	}
}

// clusterCollector reports a PostgreSQL node's leadership and its
// connection pool.
type clusterCollector struct {
	leader func() bool
	pool   *pgxpool.Pool
}

var (
	leaderDesc       = prometheus.NewDesc("drover_leader", "1 while this node is the elected leader that runs maintenance (PostgreSQL).", nil, nil)
	poolTotalDesc    = prometheus.NewDesc("drover_pg_pool_connections", "Connections in the PostgreSQL pool, by state.", []string{"state"}, nil)
	poolMaxDesc      = prometheus.NewDesc("drover_pg_pool_max_connections", "Size limit of the PostgreSQL pool.", nil, nil)
	poolAcquiresDesc = prometheus.NewDesc("drover_pg_pool_acquires_total", "Connections acquired from the PostgreSQL pool.", nil, nil)
	poolWaitsDesc    = prometheus.NewDesc("drover_pg_pool_empty_acquires_total", "Acquires that had to wait for a connection.", nil, nil)
	poolWaitDesc     = prometheus.NewDesc("drover_pg_pool_acquire_wait_seconds_total", "Time spent waiting for pool connections.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{leaderDesc, poolTotalDesc, poolMaxDesc, poolAcquiresDesc, poolWaitsDesc, poolWaitDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	leader := 0.0
	if c.leader() {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(leaderDesc, prometheus.GaugeValue, leader)
	st := c.pool.Stat()
	ch <- prometheus.MustNewConstMetric(poolTotalDesc, prometheus.GaugeValue, float64(st.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(poolTotalDesc, prometheus.GaugeValue, float64(st.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(poolTotalDesc, prometheus.GaugeValue, float64(st.ConstructingConns()), "constructing")
	ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(st.MaxConns()))
	ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(st.AcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWaitsDesc, prometheus.CounterValue, float64(st.EmptyAcquireCount()))
	ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, st.AcquireDuration().Seconds())
}
