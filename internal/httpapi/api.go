// Package httpapi is Drover's REST face: the routes of the v1 contract,
// described by the OpenAPI 3.1 document that huma generates from these
// types and served at /openapi.json. Handlers only translate between HTTP
// and the engine; no job logic lives here.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// Options configure the API.
type Options struct {
	// Version is the API document's version string.
	Version string
	// MaxBodyBytes limits a request body; zero means the engine's args
	// limit plus 64 KiB for single requests, and 32 MiB for batches.
	MaxBodyBytes int64
	// MaxArgsBytes is the engine's args limit, used for the default body
	// limits.
	MaxArgsBytes int
	// Logger receives internal errors in full; nil means slog.Default().
	Logger *slog.Logger
}

// API is the REST face over one engine.
type API struct {
	eng  *engine.Engine
	opts Options
	log  *slog.Logger
	api  huma.API
}

var hookOnce sync.Once

// New registers every v1 route on mux, with the OpenAPI document at
// /openapi.json and a reference page at /docs.
func New(mux *http.ServeMux, eng *engine.Engine, opts Options) *API {
	hookOnce.Do(hookHumaErrors)
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.MaxArgsBytes <= 0 {
		opts.MaxArgsBytes = 1 << 20
	}
	cfg := huma.DefaultConfig("Drover", opts.Version)
	cfg.Info.Description = "The REST API of Drover, a durable job server. Errors are RFC 9457 problem details with a stable `code`."
	cfg.DocsPath = "" // the default page loads scripts from a CDN; /docs is ours
	cfg.SchemasPath = ""
	cfg.CreateHooks = nil // no $schema links in bodies
	// Request bodies are checked before encoding/json decodes them: it
	// would silently turn invalid UTF-8 and lone surrogate escapes into
	// U+FFFD, so that what is stored is not what was sent.
	jsonFormat := huma.Format{Marshal: huma.DefaultJSONFormat.Marshal, Unmarshal: unmarshalJSON}
	cfg.Formats = map[string]huma.Format{"application/json": jsonFormat, "json": jsonFormat}
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "A token from `drover token create`."},
	}
	a := &API{eng: eng, opts: opts, log: opts.Logger}
	a.api = humago.New(mux, cfg)
	a.registerJobs()
	a.registerWorker()
	a.registerQueues()
	a.registerTokens(eng.Store())
	a.documentAuthErrors()
	mux.HandleFunc("GET /docs", serveDocs)
	mux.Handle("/v1/", unmatched(mux))
	return a
}

// documentAuthErrors lists 401 and 403 on every operation: once a token
// exists, the Authenticator can answer either in front of any /v1 route.
func (a *API) documentAuthErrors() {
	for _, item := range a.api.OpenAPI().Paths {
		for _, op := range []*huma.Operation{item.Get, item.Post, item.Put, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			// Every error response is the same problem schema: copy the
			// first, without its headers (such as a 503's Retry-After).
			var problem *huma.Response
			for _, key := range slices.Sorted(maps.Keys(op.Responses)) {
				if key == "default" || key[0] == '4' || key[0] == '5' {
					problem = op.Responses[key]
					break
				}
			}
			if problem == nil {
				continue
			}
			for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
				if key := strconv.Itoa(status); op.Responses[key] == nil {
					r := *problem
					r.Description = http.StatusText(status)
					r.Headers = nil
					op.Responses[key] = &r
				}
			}
		}
	}
}

// unmarshalJSON is json.Unmarshal for request bodies, refusing text that
// it would alter (see job.CheckJSONText); huma answers its error with 400.
func unmarshalJSON(data []byte, v any) error {
	if err := job.CheckJSONText(data); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return json.Unmarshal(data, v)
}

// OpenAPI returns the API's document.
func (a *API) OpenAPI() *huma.OpenAPI { return a.api.OpenAPI() }

// fail turns an engine error into the response error, logging internal
// ones in full. A call that ended because its client went away (a worker
// that stops its long poll, say) is routine, not an error of the server,
// so it is logged at debug level.
func (a *API) fail(ctx context.Context, op string, err error) error {
	p := problemOf(err)
	if p.Code == "internal" {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			a.log.DebugContext(ctx, "request ended by its client", "operation", op, "err", err)
		} else {
			a.log.ErrorContext(ctx, "request failed", "operation", op, "err", err)
		}
	}
	return p
}

func (a *API) bodyLimit(batch bool) int64 {
	if a.opts.MaxBodyBytes > 0 {
		return a.opts.MaxBodyBytes
	}
	if batch {
		return 32 << 20
	}
	return int64(a.opts.MaxArgsBytes) + 64<<10
}

// unmatched answers /v1 requests that no route takes with a problem: 405
// (with Allow) when another method would have matched, 404 otherwise.
// ServeMux would answer them in plain text.
func unmatched(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/v1/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			p := newProblem(http.StatusMethodNotAllowed, "invalid_argument", r.Method+" is not allowed on "+r.URL.Path)
			p.headers = http.Header{"Allow": []string{strings.Join(allow, ", ")}}
			writeProblem(w, p)
			return
		}
		writeProblem(w, newProblem(http.StatusNotFound, "not_found", "no route "+r.Method+" "+r.URL.Path))
	})
}
