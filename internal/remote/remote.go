// Package remote is the Go library's transport to a Drover server: the
// Client's enqueue and job calls over gRPC (JobService), and the Work
// stream (WorkerService.Work) over which a worker process receives leased
// jobs and settles them. It speaks the gRPC protocol with Connect's client
// over HTTP/2 (h2c for http:// URLs), and turns the server's errors back
// into the job package's errors, so that code written against the
// embedded store branches on the same errors (errors.Is(err,
// job.ErrLeaseLost), a *job.ValidationError naming the field) whichever
// way it reaches the jobs.
package remote

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Options tune Dial.
type Options struct {
	// Token is the bearer token sent with every call; empty sends none
	// (a server bound to loopback without tokens).
	Token string
	// HTTPClient carries the calls; nil means one made for gRPC: HTTP/2
	// only (h2c for http:// URLs), with keepalive pings that find a dead
	// server within about 30 seconds.
	HTTPClient *http.Client
	// TLS configures https:// connections of the default client.
	TLS *tls.Config
	// Logger receives reconnects and refused settles; nil means
	// slog.Default().
	Logger *slog.Logger
	// MaxMessageBytes bounds a message received from the server; zero
	// means 64 MiB (a batch of leased jobs with large args).
	MaxMessageBytes int
	// Compress asks the server to gzip its large answers (16 KiB and
	// more) and gzips large requests: worth it on a slow link, a loss of
	// CPU on a fast one, so off by default.
	Compress bool
}

// Conn is a connection to one Drover server. It is safe for concurrent
// use; calls share HTTP/2 connections.
type Conn struct {
	jobs   droverv1connect.JobServiceClient
	work   droverv1connect.WorkerServiceClient
	log    *slog.Logger
	client *http.Client
	// own is set when Conn made the HTTP client and must close it.
	own bool
}

// Dial returns a connection to the server at baseURL (http://host:port or
// https://...). No network call is made until the first request.
func Dial(baseURL string, opts Options) (*Conn, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("remote: server URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("remote: server URL %q: want http://host:port or https://host:port", baseURL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	c := &Conn{log: opts.Logger, client: opts.HTTPClient}
	if c.client == nil {
		c.client, c.own = newHTTPClient(opts.TLS), true
	}
	base := strings.TrimSuffix(u.String(), "/")
	copts := []connect.ClientOption{
		connect.WithGRPC(),
		connect.WithReadMaxBytes(opts.MaxMessageBytes),
		connect.WithInterceptors(bearer(opts.Token)),
	}
	if opts.Compress {
		copts = append(copts, connect.WithSendGzip(), connect.WithCompressMinBytes(16<<10))
	} else {
		// Connect clients accept gzip unless told not to.
		copts = append(copts, connect.WithAcceptCompression("gzip", nil, nil))
	}
	c.jobs = droverv1connect.NewJobServiceClient(c.client, base, copts...)
	c.work = droverv1connect.NewWorkerServiceClient(c.client, base, copts...)
	return c, nil
}

// newHTTPClient returns an HTTP/2-only client: gRPC needs HTTP/2, and on
// plaintext that means h2c with prior knowledge.
func newHTTPClient(tlsConf *tls.Config) *http.Client {
	p := new(http.Protocols)
	p.SetHTTP2(true)
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{
		Protocols:       p,
		TLSClientConfig: tlsConf,
		HTTP2: &http.HTTP2Config{
			// Ping an idle connection, and give up on one that does
			// not answer: a worker then reconnects instead of waiting
			// on a dead server for ever.
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
		},
		ForceAttemptHTTP2: true,
		IdleConnTimeout:   90 * time.Second,
	}
	return &http.Client{Transport: tr}
}

// Close releases the connection's idle HTTP connections. Stop every
// session first.
func (c *Conn) Close() {
	if c.own {
		c.client.CloseIdleConnections()
	}
}

// bearer adds the token to every call.
func bearer(token string) connect.Interceptor {
	return &authInterceptor{header: "Bearer " + token, set: token != ""}
}

type authInterceptor struct {
	header string
	set    bool
}

func (a *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if a.set {
			req.Header().Set("Authorization", a.header)
		}
		return next(ctx, req)
	}
}

func (a *authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if a.set {
			conn.RequestHeader().Set("Authorization", a.header)
		}
		return conn
	}
}

func (a *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// Enqueue inserts jobs: one with JobService.Enqueue, more atomically with
// EnqueueBatch.
func (c *Conn) Enqueue(ctx context.Context, specs ...job.Spec) ([]store.InsertResult, error) {
	if len(specs) == 0 {
		return nil, nil
	}
	reqs := make([]*droverv1.EnqueueRequest, len(specs))
	for i, sp := range specs {
		prefix := ""
		if len(specs) > 1 {
			prefix = fmt.Sprintf("jobs[%d].", i)
		}
		r, err := enqueueRequest(sp, prefix)
		if err != nil {
			return nil, err
		}
		reqs[i] = r
	}
	// One key for every try: a try whose answer was lost took effect,
	// and the server answers the next with its response.
	key := newIdempotencyKey()
	var jobs []*droverv1.Job
	err := retry(ctx, func() error {
		var err error
		jobs, err = c.enqueueOnce(ctx, key, reqs)
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(jobs) != len(specs) {
		return nil, fmt.Errorf("remote: enqueue of %d jobs answered with %d", len(specs), len(jobs))
	}
	out := make([]store.InsertResult, len(jobs))
	for i, pj := range jobs {
		j, err := fromJob(pj)
		if err != nil {
			return nil, err
		}
		out[i] = store.InsertResult{Job: j, Duplicate: pj.GetDuplicate()}
	}
	return out, nil
}

func (c *Conn) enqueueOnce(ctx context.Context, key string, reqs []*droverv1.EnqueueRequest) ([]*droverv1.Job, error) {
	if len(reqs) == 1 {
		req := connect.NewRequest(reqs[0])
		req.Header().Set(idempotencyKeyHeader, key)
		res, err := c.jobs.Enqueue(ctx, req)
		if err != nil {
			return nil, callError(ctx, err)
		}
		return []*droverv1.Job{res.Msg.GetJob()}, nil
	}
	req := connect.NewRequest(&droverv1.EnqueueBatchRequest{Jobs: reqs})
	req.Header().Set(idempotencyKeyHeader, key)
	res, err := c.jobs.EnqueueBatch(ctx, req)
	if err != nil {
		return nil, callError(ctx, err)
	}
	return res.Msg.GetJobs(), nil
}

// idempotencyKeyHeader is the server's grpcapi.IdempotencyKeyHeader.
const idempotencyKeyHeader = "idempotency-key"

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail
	return "go-" + hex.EncodeToString(b[:])
}

// Tries of a call that is safe to repeat.
const (
	maxTries   = 4
	retryFirst = 100 * time.Millisecond
)

// retry runs call until it succeeds, fails for good, or maxTries tries
// failed with a temporary error (no answer, unavailable, overloaded),
// waiting longer before each try.
func retry(ctx context.Context, call func() error) error {
	wait := retryFirst
	for try := 1; ; try++ {
		err := call()
		if err == nil || try == maxTries || !temporary(err) {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return err
		}
		wait *= 2
	}
}

// callError is fromError for a call made under ctx: a cancellation or
// deadline that is not ctx's own came from the connection (a stream reset
// by a proxy, say), so it is job.ErrUnavailable, which retry tries again.
func callError(ctx context.Context, err error) error {
	err = fromError(err)
	if ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("%w: the connection ended the call: %w", job.ErrUnavailable, err)
	}
	return err
}

// temporary reports whether trying again later may succeed.
func temporary(err error) bool {
	return errors.Is(err, job.ErrUnavailable) || errors.Is(err, job.ErrOverloaded)
}

// Get returns one job with its error history.
func (c *Conn) Get(ctx context.Context, id job.ID) (*job.Job, error) {
	return oneJob(ctx, func() (*droverv1.GetJobResponse, error) {
		return msg(c.jobs.GetJob(ctx, connect.NewRequest(&droverv1.GetJobRequest{Id: int64(id)})))
	})
}

// Cancel cancels a job that has not finished. Like Get and Retry, it is
// tried again when no answer came: cancelling a cancelled job returns it.
func (c *Conn) Cancel(ctx context.Context, id job.ID) (*job.Job, error) {
	return oneJob(ctx, func() (*droverv1.CancelJobResponse, error) {
		return msg(c.jobs.CancelJob(ctx, connect.NewRequest(&droverv1.CancelJobRequest{Id: int64(id)})))
	})
}

// Retry makes a job available now.
func (c *Conn) Retry(ctx context.Context, id job.ID) (*job.Job, error) {
	return oneJob(ctx, func() (*droverv1.RetryJobResponse, error) {
		return msg(c.jobs.RetryJob(ctx, connect.NewRequest(&droverv1.RetryJobRequest{Id: int64(id)})))
	})
}

// oneJob runs call, a call that answers one job, as retry does, and
// decodes the job.
func oneJob[M interface{ GetJob() *droverv1.Job }](ctx context.Context, call func() (M, error)) (*job.Job, error) {
	var pj *droverv1.Job
	err := retry(ctx, func() error {
		m, err := call()
		if err != nil {
			return callError(ctx, err)
		}
		pj = m.GetJob()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fromJob(pj)
}

// msg takes the message out of a call's response.
func msg[T any](res *connect.Response[T], err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	return res.Msg, nil
}

// errorDomain is the domain of the server's ErrorInfo details, whose
// reason is the stable code.
const errorDomain = "drover"

// Error is a refusal from the server: its stable code and message. It
// unwraps to the job package's error of that code (job.ErrNotFound for
// not_found, and so on), so callers branch with errors.Is as they do on
// the embedded store.
type Error struct {
	// Code is the stable code (lease_lost, not_found, ...).
	Code string
	// Message is the server's explanation.
	Message string
	err     error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the job package's error for the code.
func (e *Error) Unwrap() error { return e.err }

// sentinels maps stable codes back to the job package's errors; codes of
// authentication map to ErrUnauthorized and ErrForbidden.
var sentinels = map[string]error{
	"invalid_argument":     job.ErrInvalid,
	"idempotency_mismatch": job.ErrIdempotencyMismatch,
	"too_large":            job.ErrTooLarge,
	"not_found":            job.ErrNotFound,
	"lease_lost":           job.ErrLeaseLost,
	"invalid_state":        job.ErrInvalidState,
	"conflict":             job.ErrConflict,
	"overloaded":           job.ErrOverloaded,
	"storage_full":         job.ErrStorageFull,
	"unavailable":          job.ErrUnavailable,
	"unauthorized":         ErrUnauthorized,
	"forbidden":            ErrForbidden,
}

// Authentication refusals.
var (
	// ErrUnauthorized: the server wants a valid bearer token.
	ErrUnauthorized = errors.New("unauthorized: a valid bearer token is required")
	// ErrForbidden: the token's scope does not allow the call.
	ErrForbidden = errors.New("forbidden: the token's scope does not allow the call")
)

// codeError turns a stable code and message into an error; field, when
// set, makes an invalid_argument a *job.ValidationError.
func codeError(code, msg, field string) error {
	if code == "invalid_argument" && field != "" {
		return &job.ValidationError{Field: field, Message: strings.TrimPrefix(msg, field+": ")}
	}
	if s, ok := sentinels[code]; ok {
		return &Error{Code: code, Message: msg, err: s}
	}
	return &Error{Code: code, Message: msg, err: errors.New(code)}
}

// fromError turns a call's error into the job package's terms. Transport
// failures (no answer, a reset stream) become job.ErrUnavailable, so that
// callers retry them as they would a server that said so.
func fromError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("%w: %w", job.ErrUnavailable, err)
	}
	code, field := "", ""
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		switch m := v.(type) {
		case *errdetails.ErrorInfo:
			if m.GetDomain() == errorDomain {
				code = m.GetReason()
			}
		case *errdetails.BadRequest:
			if fv := m.GetFieldViolations(); len(fv) > 0 {
				field = fv[0].GetField()
			}
		}
	}
	if code == "" {
		code = ce.Meta().Get("drover-code")
	}
	if code == "" {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeInternal, connect.CodeAborted:
			return fmt.Errorf("%w: %w", job.ErrUnavailable, err)
		case connect.CodeCanceled:
			return context.Canceled
		case connect.CodeDeadlineExceeded:
			return context.DeadlineExceeded
		case connect.CodeUnauthenticated:
			code = "unauthorized"
		case connect.CodePermissionDenied:
			code = "forbidden"
		case connect.CodeInvalidArgument:
			// Connect's own refusals (a message it cannot decode, one
			// over its size limit) carry no code of ours.
			code = "invalid_argument"
		case connect.CodeNotFound:
			code = "not_found"
		case connect.CodeResourceExhausted:
			code = "overloaded"
		default:
			code = "internal"
		}
	}
	return codeError(code, ce.Message(), field)
}

// GiveBack hands a lease back with a unary call (WorkerService.Snooze with
// no delay): the job is available again at once and the attempt does
// not count. It serves a worker that received a job it will not run,
// outside a session.
func (c *Conn) GiveBack(ctx context.Context, id job.ID, token string) error {
	_, err := c.work.Snooze(ctx, connect.NewRequest(&droverv1.SnoozeRequest{Id: int64(id), LeaseToken: token}))
	return callError(ctx, err)
}
