// Package graphqlapi is Drover's GraphQL face, served at /graphql with
// gqlgen. The contract is api/graphql/schema.graphqls; gqlgen generates
// the executable schema into the generated package, and the resolvers
// here only translate between GraphQL and the engine, as the REST and
// gRPC faces do: no job logic lives here.
//
// Every operation goes through, in order: the request body limit,
// gqlgen's parser (with a token limit), validation, the document limits
// (depth, aliases, complexity; introspection when turned off), admission
// control shared with REST and gRPC (an overloaded server answers
// "overloaded"), and then, for each root field, the bearer-token check
// with the scope that auth.Op.Scope gives the field's operation (the same
// table as the other faces). A resolver's error carries the stable code
// of the shared error table (package errcode) in extensions.code, and an
// invalid input names its field in extensions.field; internal errors are
// logged in full and shown as "internal error".
//
// Queries and mutations travel as POST application/json. The jobEvents
// subscription travels over WebSocket (the graphql-transport-ws
// protocol; the token may come in connection_init's payload as
// {"authorization": "Bearer ..."}) and over server-sent events (POST
// with Accept: text/event-stream). GET /graphql from a browser (Accept:
// text/html) answers a small query page whose assets are embedded in the
// binary.
package graphqlapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/handler"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/99designs/gqlgen/graphql/handler/lru"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
)

// Path is where the face is served.
const Path = "/graphql"

// Defaults of Options.
const (
	// DefaultMaxDepth bounds how deeply selections nest.
	DefaultMaxDepth = 12
	// DefaultMaxAliases bounds the aliased fields of one document.
	DefaultMaxAliases = 30
	// DefaultMaxComplexity bounds an operation's complexity: each field
	// costs one plus its selections, and a list of jobs costs its page
	// size times a job's selection. A full page of 1,000 jobs with every
	// field fits.
	DefaultMaxComplexity = 50_000
	// DefaultMaxBodyBytes bounds a request body, as REST bounds a batch.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultMaxTokens bounds the tokens of a document: large inputs
	// travel in variables, which are not tokens.
	DefaultMaxTokens = 20_000
	// DefaultMaxSubscriptionsPerConn bounds the subscriptions one
	// WebSocket connection may hold at once.
	DefaultMaxSubscriptionsPerConn = 16
	// DefaultWSInitTimeout is how long a WebSocket client has to send
	// connection_init.
	DefaultWSInitTimeout = 10 * time.Second
	// DefaultWSPingInterval is how often the server pings a
	// graphql-transport-ws client; one that does not answer within twice
	// that is dropped.
	DefaultWSPingInterval = 30 * time.Second
	// DefaultSSEKeepAlive is how often an idle SSE stream gets a comment
	// line, so that proxies keep it open.
	DefaultSSEKeepAlive = 30 * time.Second
)

// Options configure the GraphQL face. Zero values take the defaults.
type Options struct {
	// Auth checks bearer tokens; nil leaves the API open (tests only: the
	// server always sets it).
	Auth *auth.Authenticator
	// Admit, when set, admits each operation or refuses it with an error
	// matching job.ErrOverloaded. long marks operations that mostly wait
	// (subscriptions, leases), which count against the long-poll limit.
	// The returned release is called when the operation ends.
	Admit func(long bool) (release func(), err error)
	// Introspection allows __schema and __type queries.
	Introspection bool
	// MaxDepth, MaxAliases and MaxComplexity limit a document (see the
	// Default constants); negative turns a limit off.
	MaxDepth, MaxAliases, MaxComplexity int
	// MaxBodyBytes limits a request body.
	MaxBodyBytes int64
	// MaxTokens limits the tokens of a document.
	MaxTokens int
	// MaxSubscriptionsPerConn limits the subscriptions of one WebSocket
	// connection.
	MaxSubscriptionsPerConn int
	// WSInitTimeout, WSPingInterval and SSEKeepAlive time the streaming
	// transports.
	WSInitTimeout, WSPingInterval, SSEKeepAlive time.Duration
	// Logger receives internal errors in full; nil means slog.Default().
	Logger *slog.Logger
}

func (o *Options) defaults() {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&o.MaxDepth, DefaultMaxDepth)
	def(&o.MaxAliases, DefaultMaxAliases)
	def(&o.MaxComplexity, DefaultMaxComplexity)
	def(&o.MaxTokens, DefaultMaxTokens)
	def(&o.MaxSubscriptionsPerConn, DefaultMaxSubscriptionsPerConn)
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.WSInitTimeout <= 0 {
		o.WSInitTimeout = DefaultWSInitTimeout
	}
	if o.WSPingInterval <= 0 {
		o.WSPingInterval = DefaultWSPingInterval
	}
	if o.SSEKeepAlive <= 0 {
		o.SSEKeepAlive = DefaultSSEKeepAlive
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// API is the GraphQL face over one engine.
type API struct {
	eng  *engine.Engine
	opts Options
	log  *slog.Logger
	srv  *handler.Server
}

// New returns the GraphQL face over eng.
func New(eng *engine.Engine, opts Options) *API {
	opts.defaults()
	a := &API{eng: eng, opts: opts, log: opts.Logger}
	cfg := Config{Resolvers: &resolver{a}}
	setComplexity(&cfg.Complexity)
	srv := handler.New(NewExecutableSchema(cfg))
	srv.AddTransport(transport.Websocket{
		InitFunc:         a.wsInit,
		InitTimeout:      opts.WSInitTimeout,
		PingPongInterval: opts.WSPingInterval,
		// A message carries one operation: the document and its
		// variables, bounded like a request body.
		PayloadReadLimit: &opts.MaxBodyBytes,
		ErrorFunc: func(ctx context.Context, err error) {
			a.log.DebugContext(ctx, "graphql websocket", "err", err)
		},
	})
	// SSE before POST: both take POST application/json, and SSE is the
	// one the client asked for with Accept: text/event-stream.
	srv.AddTransport(transport.SSE{KeepAlivePingInterval: opts.SSEKeepAlive})
	srv.AddTransport(transport.POST{})
	srv.SetQueryCache(queryCache{lru.New[*ast.QueryDocument](500)})
	srv.SetParserTokenLimit(opts.MaxTokens)
	srv.SetErrorPresenter(a.presentError)
	srv.SetRecoverFunc(a.recoverPanic)
	if opts.Introspection {
		srv.Use(extension.Introspection{})
	}
	srv.Use(documentLimits{maxDepth: opts.MaxDepth, maxAliases: opts.MaxAliases})
	if opts.MaxComplexity > 0 {
		srv.Use(extension.FixedComplexityLimit(opts.MaxComplexity))
	}
	srv.AroundOperations(a.admit)
	srv.AroundResponses(a.endOfStream)
	srv.AroundFields(a.rootField)
	a.srv = srv
	return a
}

// Mount registers the face on mux: POST and WebSocket at Path, and the
// query page with its assets (GET).
func (a *API) Mount(mux *http.ServeMux) {
	mux.Handle(Path, a)
	mux.Handle("GET "+pageAssets, http.StripPrefix(pageAssets, assetHandler()))
}

// ServeHTTP implements http.Handler: the page for a browser's GET, the
// body limit, and then gqlgen's transports.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.Header.Get("Upgrade") == "" {
		if strings.Contains(r.Header.Get("Accept"), "text/html") {
			servePage(w, r)
			return
		}
		w.Header().Set("Allow", "POST")
		writeErrors(w, http.StatusMethodNotAllowed, requestError("invalid_argument",
			"send GraphQL operations as POST with Content-Type: application/json, or over a WebSocket (graphql-transport-ws); GET from a browser shows the query page"))
		return
	}
	if r.Header.Get("Upgrade") == "" {
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); r.Method != http.MethodPost || err != nil || mt != "application/json" {
			writeErrors(w, http.StatusUnsupportedMediaType, requestError("invalid_argument",
				"send GraphQL operations as POST with Content-Type: application/json (add Accept: text/event-stream for a subscription), or over a WebSocket (graphql-transport-ws)"))
			return
		}
	}
	if r.ContentLength > a.opts.MaxBodyBytes {
		writeErrors(w, http.StatusRequestEntityTooLarge, requestError("too_large",
			"the request body is larger than the limit of "+formatBytes(a.opts.MaxBodyBytes)))
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxBodyBytes)
		if r.ContentLength < 0 {
			// A body of unknown length: read it here (gqlgen reads it whole
			// anyway), so that one past the limit gets 413 and too_large.
			b, err := io.ReadAll(r.Body)
			if err != nil {
				var tooLarge *http.MaxBytesError
				if errors.As(err, &tooLarge) {
					writeErrors(w, http.StatusRequestEntityTooLarge, requestError("too_large",
						"the request body is larger than the limit of "+formatBytes(a.opts.MaxBodyBytes)))
					return
				}
				writeErrors(w, http.StatusBadRequest, requestError("invalid_argument", "could not read the request body: "+err.Error()))
				return
			}
			r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		}
	}
	ctx := withAuthorization(r.Context(), r.Header.Get("Authorization"))
	switch {
	case r.Header.Get("Upgrade") != "":
		// A WebSocket outlives the HTTP server's graceful stop (it is
		// hijacked): end it when the engine stops serving, once its
		// subscriptions (which the engine ends) have sent their last
		// message, or after wsStopGrace.
		subs := &connSubs{max: a.opts.MaxSubscriptionsPerConn}
		ctx = context.WithValue(ctx, connSubsKey{}, subs)
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-a.eng.Stopping():
				subs.waitIdle(ctx, wsStopGrace)
				cancel()
			case <-ctx.Done():
			}
		}()
	case !strings.Contains(r.Header.Get("Accept"), "text/event-stream"):
		ctx = context.WithValue(ctx, oneShotKey{}, true)
	}
	a.srv.ServeHTTP(w, r.WithContext(ctx))
}

// wsStopGrace bounds how long a WebSocket's subscriptions have to send
// their last message when the server stops.
const wsStopGrace = 2 * time.Second

// oneShotKey marks a request answered with one JSON response (POST
// without Accept: text/event-stream), which cannot carry a subscription.
type oneShotKey struct{}

// queryCache keeps parsed documents, but not large ones: the cache is
// bounded in entries, and a few huge documents must not hold memory.
type queryCache struct {
	*lru.LRU[*ast.QueryDocument]
}

// maxCachedQuery is the longest document kept in the cache.
const maxCachedQuery = 16 << 10

// Add implements graphql.Cache.
func (c queryCache) Add(ctx context.Context, key string, value *ast.QueryDocument) {
	if len(key) <= maxCachedQuery {
		c.LRU.Add(ctx, key, value)
	}
}

var _ graphql.Cache[*ast.QueryDocument] = queryCache{}
