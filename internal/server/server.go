// Package server wires Drover together: configuration → store → engine →
// maintenance → faces → listener. cmd/drover calls it, and so do the
// end-to-end tests, which start the exact production assembly in-process on
// a temporary directory and port 0.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/graphqlapi"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/maintenance"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// Server is one Drover node. Create it with New, run it with Serve, and
// close it with Close (Serve's graceful stop does that itself).
type Server struct {
	cfg   config.Config
	log   *slog.Logger
	store store.Store
	eng   *engine.Engine
	svcs  []*maintenance.Service
	// cluster runs the listener and leader election on PostgreSQL; nil
	// on the embedded store.
	cluster *maintenance.Cluster
	mux     *http.ServeMux
	auth    *httpapi.Authenticator
	// adm is the admission control that REST and gRPC share.
	adm   *httpapi.Admission
	grpc  *grpcapi.API
	met   *metrics
	ready atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// New opens the store named by cfg and builds the engine, the background
// services and the HTTP handler. Nothing runs until Serve.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.NodeID == "" {
		host, _ := os.Hostname()
		cfg.NodeID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	st, err := openStore(cfg, log)
	if err != nil {
		return nil, err
	}
	tokens, err := st.ListTokens(context.Background())
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("read API tokens: %w", err)
	}
	if err := cfg.CheckExposure(len(tokens) > 0); err != nil {
		st.Close()
		return nil, err
	}
	eng, err := engine.New(engine.Config{
		Store:           st,
		Limits:          job.Limits{MaxArgsBytes: cfg.MaxArgsBytes},
		DefaultLeaseFor: cfg.LeaseFor,
		PollInterval:    pollInterval(st),
		Logger:          log,
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, store: st, eng: eng, mux: http.NewServeMux(), auth: httpapi.NewAuthenticator(st), adm: httpapi.NewAdmission(admissionLimits(cfg)), met: newMetrics(eng)}
	s.svcs = []*maintenance.Service{
		maintenance.NewPromoter(eng, 0, log),
		maintenance.NewLeaseRescuer(eng, 0, log),
		maintenance.NewPruner(eng, maintenance.Retention{
			Completed: cfg.RetainCompleted, Cancelled: cfg.RetainCancelled, Discarded: cfg.RetainDiscarded,
		}, 0, log),
	}
	if pg, ok := st.(*pgstore.Store); ok {
		s.cluster, err = maintenance.StartCluster(eng, pg, cfg.NodeID, log)
		if err != nil {
			st.Close()
			return nil, err
		}
		s.cluster.Attach(s.svcs...)
		s.met.reg.MustRegister(&clusterCollector{leader: s.cluster.IsLeader, pool: pg.Pool()})
	}
	s.routes()
	httpapi.New(s.mux, eng, httpapi.Options{MaxArgsBytes: cfg.MaxArgsBytes, Logger: log, Version: cfg.Version})
	// gRPC, gRPC-Web and Connect on the same mux and port, behind the same
	// tokens and admission control (applied by its own interceptor, so
	// that refusals are gRPC errors).
	s.grpc = grpcapi.New(eng, grpcapi.Options{Auth: s.auth.Authenticator, Admit: s.adm.Admit, MaxArgsBytes: cfg.MaxArgsBytes, Logger: log})
	s.grpc.Mount(s.mux)
	// GraphQL at /graphql on the same mux, behind the same tokens and
	// admission control, applied per operation and root field inside the
	// face (so that refusals are GraphQL errors with their codes).
	graphqlapi.New(eng, graphqlapi.Options{
		Auth: s.auth.Authenticator, Admit: s.adm.Admit, Introspection: cfg.GraphQLIntrospection,
		MaxDepth: cfg.GraphQLMaxDepth, MaxComplexity: cfg.GraphQLMaxComplexity, MaxAliases: cfg.GraphQLMaxAliases,
		MaxBodyBytes: min(batchBodyBytes, cfg.RequestBytes()), Logger: log,
	}).Mount(s.mux)
	return s, nil
}

// embeddedPollInterval is how often a waiting lease call looks for jobs
// on its own on the embedded store. Every change there happens in this
// process and wakes waiting calls at once (a wake-up is never lost with a
// waiter that gives up: it is passed on), so the look is only a safety
// net, and a rare one: with ten thousand idle long polls, the engine's
// default of one second costs ten thousand store calls a second through
// the single writer. PostgreSQL keeps the default, for the notifications
// from other nodes that a dropped connection can lose.
const embeddedPollInterval = 10 * time.Second

func pollInterval(st store.Store) time.Duration {
	if _, ok := st.(*pgstore.Store); ok {
		return 0 // the engine's default
	}
	return embeddedPollInterval
}

func openStore(cfg config.Config, log *slog.Logger) (store.Store, error) {
	if cfg.DatabaseURL != "" {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		st, err := pgstore.Open(ctx, cfg.DatabaseURL, pgstore.Options{
			Schema: cfg.DatabaseSchema, NoMigrate: cfg.NoMigrate, NodeID: cfg.NodeID, Logger: log,
		})
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL store: %w", err)
		}
		return st, nil
	}
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: cfg.NoSync, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("open embedded store: %w", err)
	}
	return st, nil
}

// Engine returns the server's engine.
func (s *Server) Engine() *engine.Engine { return s.eng }

// Handler returns the server's HTTP handler: the routes behind the token
// check and the admission limits.
func (s *Server) Handler() http.Handler {
	return s.met.instrument(s.adm.Wrap(s.auth.Wrap(capturePattern(s.mux))))
}

// Shares of Config.MemoryLimit: the Go runtime's soft limit, which leaves
// room for the binary's own pages and memory the runtime does not count,
// and the live heap past which admission refuses new requests, which
// leaves the garbage collector room to work.
const (
	runtimeLimitEighths = 7
	liveHeapEighths     = 5
)

// batchBodyBytes is the largest request body the API takes (a batch
// enqueue): what a body of unknown length counts against the request
// bytes in progress.
const batchBodyBytes = 32 << 20

func admissionLimits(cfg config.Config) httpapi.AdmissionLimits {
	l := httpapi.AdmissionLimits{
		MaxRequests:        cfg.MaxRequests,
		MaxLeases:          cfg.MaxLeaseWaiters,
		MaxBytes:           cfg.RequestBytes(),
		UnknownLengthBytes: batchBodyBytes,
	}
	if cfg.MemoryLimit > 0 {
		l.MaxLiveHeap = int64(cfg.MemoryLimit) / 8 * liveHeapEighths
	}
	return l
}

// serverProtocols are the protocols the API port speaks: HTTP/1.1 and
// HTTP/2, with or without TLS.
func serverProtocols() *http.Protocols {
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	return p
}

// http2Config bounds each HTTP/2 connection: how many calls (streams) it
// may have open at once, and when an idle peer is pinged and dropped, so
// that a vanished gRPC client does not hold its streams open.
func http2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxConcurrentStreams: 250,
		SendPingTimeout:      30 * time.Second,
		PingTimeout:          15 * time.Second,
	}
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	s.mux.Handle("GET /metrics", s.met.handler())
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.ready.Load() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "starting or shutting down"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.store.Ping(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "store: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// Listen opens the configured address.
func (s *Server) Listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr) //nolint:noctx // Listen has no context to pass; Serve owns the lifecycle
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	return ln, nil
}

// Serve starts the background services and serves HTTP on ln until ctx
// ends, then stops gracefully: readiness turns false, new connections are
// refused, requests in flight get up to ShutdownTimeout to finish, the
// services stop, and the store is closed. It returns nil after a clean
// stop.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		// HTTP/2 without TLS (h2c) beside HTTP/1.1, for gRPC clients on a
		// plaintext port; with TLS in front, HTTP/2 is negotiated as usual.
		Protocols: serverProtocols(),
		HTTP2:     http2Config(),
	}
	if s.cfg.MemoryLimit > 0 {
		// The limit is the process's; give the previous one back when
		// this server stops (tests run several servers in one process).
		prev := debug.SetMemoryLimit(int64(s.cfg.MemoryLimit) / 8 * runtimeLimitEighths)
		defer debug.SetMemoryLimit(prev)
	}
	for _, svc := range s.svcs {
		if err := svc.Start(ctx); err != nil {
			return err
		}
	}
	// Ready before the first request can be handled: the services run
	// and ln already accepts connections.
	s.ready.Store(true)
	errc := make(chan error, 1)
	if s.cfg.DebugAddr != "" {
		dbg, err := s.serveDebug()
		if err != nil {
			return err
		}
		defer dbg.Close()
	}
	go func() { errc <- hs.Serve(ln) }()
	s.log.Info("drover serving", "addr", ln.Addr().String(), "store", s.storeName(),
		"memory_limit", s.cfg.MemoryLimit.String(), "max_request_bytes", config.ByteSize(s.cfg.RequestBytes()).String())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.ready.Store(false)
	s.grpc.SetServing(false)
	s.log.Info("drover stopping", "timeout", s.cfg.ShutdownTimeout.String())
	// Waiting lease calls answer "no jobs" now rather than hold the stop
	// up for as long as their wait (up to a minute).
	s.eng.StopWaiting()
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	shutErr := hs.Shutdown(sctx)
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	closeErr := s.Close()
	s.log.Info("drover stopped")
	return errors.Join(serveErr, shutErr, closeErr)
}

// serveDebug serves net/http/pprof on the debug address.
func (s *Server) serveDebug() (*http.Server, error) {
	ln, err := net.Listen("tcp", s.cfg.DebugAddr) //nolint:noctx // called from Serve before the listener is up; Serve closes it
	if err != nil {
		return nil, fmt.Errorf("listen on debug address %s: %w", s.cfg.DebugAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln) //nolint:errcheck // ends with Close
	s.log.Info("profiler serving", "addr", ln.Addr().String())
	return hs, nil
}

func (s *Server) storeName() string {
	if pg, ok := s.store.(*pgstore.Store); ok {
		return "postgres:" + pg.Schema()
	}
	return "embedded:" + s.cfg.DataDir
}

// Close stops the background services and closes the store. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		for _, svc := range s.svcs {
			svc.Stop()
		}
		if s.cluster != nil {
			// Resign before closing the pool, so another node leads at once.
			s.cluster.Stop(5 * time.Second)
		}
		s.closeErr = s.store.Close()
	})
	return s.closeErr
}
