// Package restclient is a Go client of Drover's REST API, used by the CLI
// and by the load generator. It speaks the wire types of package httpapi.
//
// # Lost answers
//
// A request can reach the server and take effect while its answer is
// lost: the connection breaks or the client times out. The client then
// sends again, a few times, the calls that are safe to repeat: reads,
// completes (the server answers a repeated complete with its first result),
// queue pauses and resumes, cancels, and enqueues, which carry a random
// Idempotency-Key so that a repeat returns the first answer instead of
// making a second job. It never repeats a lease, a delete, a retry or a
// token call, nor any call that the server answered.
package restclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
)

// DefaultRetries is how many times a client sends a call again after a
// connection error, when the call is safe to repeat.
const DefaultRetries = 3

// Opts tune a Client. The zero value gives the defaults.
type Opts struct {
	// Retries is how many times a call that is safe to repeat is sent
	// again after a connection error or a timeout: zero means
	// DefaultRetries, a negative value none. The waits between tries
	// grow from 100 ms and end with the call's context.
	Retries int
	// NoIdempotencyKeys stops Enqueue, EnqueueID and EnqueueBatch from
	// sending a random Idempotency-Key; they are then never repeated. A
	// load generator that measures the plain insert path sets it.
	NoIdempotencyKeys bool
}

// Client talks to one server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
	opts  Opts
}

// New returns a client of the server at base (for example
// "http://127.0.0.1:8080"), sending token as a bearer token when set. It
// is NewWithOpts with the default Opts.
func New(base, token string, hc *http.Client) (*Client, error) {
	return NewWithOpts(base, token, hc, Opts{})
}

// NewWithOpts returns a client of the server at base, sending token as a
// bearer token when set, with hc (a client with a 2-minute timeout when
// nil) and the options o.
func NewWithOpts(base, token string, hc *http.Client, o Opts) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want an http:// or https:// URL", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	switch {
	case o.Retries == 0:
		o.Retries = DefaultRetries
	case o.Retries < 0:
		o.Retries = 0
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, hc: hc, opts: o}, nil
}

// Error is a problem the server answered with.
type Error struct {
	Status int
	Code   string
	Detail string
	Fields []string
}

func (e *Error) Error() string {
	msg := e.Detail
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if len(e.Fields) > 0 {
		msg += " (" + strings.Join(e.Fields, "; ") + ")"
	}
	return fmt.Sprintf("%s [%s, HTTP %d]", msg, e.Code, e.Status)
}

// call is one API call: what to send and whether it may be sent again
// after a connection error.
type call struct {
	method, path string
	body         any
	// key, when set, is sent as the Idempotency-Key header.
	key string
	// repeatable marks a call that is safe to send again when its answer
	// was lost.
	repeatable bool
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil). It returns the HTTP status. A repeatable call
// is sent again after a connection error, up to Opts.Retries times.
func (c *Client) do(ctx context.Context, cl call, out any) (int, error) {
	var payload []byte
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return 0, err
		}
		payload = b
	}
	wait := 100 * time.Millisecond
	for try := 0; ; try++ {
		status, data, err := c.send(ctx, cl, payload)
		var lost *lostError
		if !errors.As(err, &lost) {
			if err != nil {
				return status, err
			}
			return decode(cl, status, data, out)
		}
		if !cl.repeatable || try >= c.opts.Retries || ctx.Err() != nil {
			return status, lost.err
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return status, lost.err
		case <-t.C:
		}
		wait *= 2
	}
}

// lostError is a call whose answer did not arrive whole: the request may
// or may not have taken effect.
type lostError struct{ err error }

func (e *lostError) Error() string { return e.err.Error() }

// send sends one request and reads its whole answer. A transport error or
// a broken answer is returned as a *lostError.
func (c *Client) send(ctx context.Context, cl call, payload []byte) (int, []byte, error) {
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, c.base+cl.path, rd)
	if err != nil {
		return 0, nil, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if cl.key != "" {
		req.Header.Set("Idempotency-Key", cl.key)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, &lostError{err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, nil, &lostError{fmt.Errorf("read %s %s response: %w", cl.method, cl.path, err)}
	}
	return resp.StatusCode, data, nil
}

// decode turns an answer into out, or into an *Error for a problem.
func decode(cl call, status int, data []byte, out any) (int, error) {
	if status >= 400 {
		var p struct {
			Code   string `json:"code"`
			Detail string `json:"detail"`
			Errors []struct {
				Message  string `json:"message"`
				Location string `json:"location"`
			} `json:"errors"`
		}
		e := &Error{Status: status}
		if json.Unmarshal(data, &p) == nil && p.Code != "" {
			e.Code, e.Detail = p.Code, p.Detail
			for _, d := range p.Errors {
				e.Fields = append(e.Fields, strings.TrimSpace(d.Location+": "+d.Message))
			}
		} else {
			e.Code, e.Detail = "http_error", strings.TrimSpace(string(data))
		}
		return status, e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return status, fmt.Errorf("decode %s %s response: %w", cl.method, cl.path, err)
		}
	}
	return status, nil
}

// enqueueCall is an enqueue to path, with a fresh idempotency key unless
// the options turn keys off: with a key it is safe to repeat.
func (c *Client) enqueueCall(path string, body any) (call, error) {
	cl := call{method: http.MethodPost, path: path, body: body}
	if c.opts.NoIdempotencyKeys {
		return cl, nil
	}
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		return call{}, err
	}
	cl.key = "restclient-" + base64.RawURLEncoding.EncodeToString(b[:])
	cl.repeatable = true
	return cl, nil
}

// Enqueue enqueues one job.
func (c *Client) Enqueue(ctx context.Context, r httpapi.EnqueueRequest) (*httpapi.Job, error) {
	cl, err := c.enqueueCall("/v1/jobs", r)
	if err != nil {
		return nil, err
	}
	var j httpapi.Job
	if _, err := c.do(ctx, cl, &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// EnqueueBatch enqueues jobs, all or nothing.
func (c *Client) EnqueueBatch(ctx context.Context, rs []httpapi.EnqueueRequest) ([]httpapi.Job, error) {
	cl, err := c.enqueueCall("/v1/jobs/batch", map[string]any{"jobs": rs})
	if err != nil {
		return nil, err
	}
	var out struct {
		Jobs []httpapi.Job `json:"jobs"`
	}
	_, err = c.do(ctx, cl, &out)
	return out.Jobs, err
}

// ListParams filter ListJobs.
type ListParams struct {
	States, Kinds, Queues []string
	Tag                   string
	Limit                 int
	Cursor                string
	Desc                  bool
}

// JobPage is one page of jobs.
type JobPage struct {
	Jobs       []httpapi.Job `json:"jobs"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// read is a GET of path: safe to repeat.
func read(path string) call {
	return call{method: http.MethodGet, path: path, repeatable: true}
}

// ListJobs lists one page of jobs.
func (c *Client) ListJobs(ctx context.Context, p ListParams) (*JobPage, error) {
	q := url.Values{}
	if len(p.States) > 0 {
		q.Set("state", strings.Join(p.States, ","))
	}
	if len(p.Kinds) > 0 {
		q.Set("kind", strings.Join(p.Kinds, ","))
	}
	if len(p.Queues) > 0 {
		q.Set("queue", strings.Join(p.Queues, ","))
	}
	if p.Tag != "" {
		q.Set("tag", p.Tag)
	}
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
	if p.Desc {
		q.Set("order", "desc")
	}
	var page JobPage
	path := "/v1/jobs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	_, err := c.do(ctx, read(path), &page)
	return &page, err
}

// GetJob returns one job.
func (c *Client) GetJob(ctx context.Context, id int64) (*httpapi.Job, error) {
	var j httpapi.Job
	_, err := c.do(ctx, read("/v1/jobs/"+strconv.FormatInt(id, 10)), &j)
	return &j, err
}

// JobAction runs an operator action on a job: "cancel" or "retry". A
// cancel is repeated after a lost answer (cancelling a cancelled job
// returns it unchanged); a retry is not (the job may have run again in
// between).
func (c *Client) JobAction(ctx context.Context, id int64, action string) (*httpapi.Job, error) {
	var j httpapi.Job
	cl := call{method: http.MethodPost, path: "/v1/jobs/" + strconv.FormatInt(id, 10) + "/" + action, repeatable: action == "cancel"}
	_, err := c.do(ctx, cl, &j)
	return &j, err
}

// DeleteJob deletes a job. It is not repeated after a lost answer: the
// repeat would answer 404 for a job that the first call deleted.
func (c *Client) DeleteJob(ctx context.Context, id int64) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, path: "/v1/jobs/" + strconv.FormatInt(id, 10)}, nil)
	return err
}

// Queues lists the queues.
func (c *Client) Queues(ctx context.Context) ([]httpapi.Queue, error) {
	var out struct {
		Queues []httpapi.Queue `json:"queues"`
	}
	_, err := c.do(ctx, read("/v1/queues"), &out)
	return out.Queues, err
}

// SetQueuePaused pauses or resumes a queue.
func (c *Client) SetQueuePaused(ctx context.Context, name string, paused bool) (*httpapi.Queue, error) {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	var q httpapi.Queue
	_, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/queues/" + url.PathEscape(name) + "/" + verb, repeatable: true}, &q)
	return &q, err
}

// IsCode reports whether err is a server problem with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// LeaseRequest asks for jobs to work.
type LeaseRequest struct {
	Queues   []string          `json:"queues"`
	Max      int               `json:"max,omitempty"`
	Wait     *httpapi.Duration `json:"wait,omitempty"`
	LeaseFor *httpapi.Duration `json:"lease_for,omitempty"`
	Worker   string            `json:"worker,omitempty"`
}

// Lease leases jobs, waiting up to r.Wait for one to arrive. It is not
// repeated after a lost answer: the jobs that answer held stay leased
// until their lease expires, and the next lease gets others.
func (c *Client) Lease(ctx context.Context, r LeaseRequest) ([]httpapi.Job, error) {
	var out struct {
		Jobs []httpapi.Job `json:"jobs"`
	}
	_, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/lease", body: r}, &out)
	return out.Jobs, err
}

// Complete completes a leased job. After a lost answer it is sent again
// with the same token, which the server answers with the first result.
func (c *Client) Complete(ctx context.Context, id int64, token string, output json.RawMessage) (*httpapi.Job, error) {
	body := map[string]any{"lease_token": token}
	if len(output) > 0 {
		body["output"] = output
	}
	var j httpapi.Job
	_, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/jobs/" + strconv.FormatInt(id, 10) + "/complete", body: body, repeatable: true}, &j)
	return &j, err
}

// EnqueueID enqueues one job and returns only its id and whether it was a
// duplicate: cheaper than Enqueue when the caller needs no more, as in a
// load generator.
func (c *Client) EnqueueID(ctx context.Context, r httpapi.EnqueueRequest) (int64, bool, error) {
	cl, err := c.enqueueCall("/v1/jobs", r)
	if err != nil {
		return 0, false, err
	}
	var out struct {
		ID        int64 `json:"id"`
		Duplicate bool  `json:"duplicate"`
	}
	_, err = c.do(ctx, cl, &out)
	return out.ID, out.Duplicate, err
}

// CreateToken creates an API token (admin); the reply's Token field is the
// only time the secret is shown. It is not repeated after a lost answer:
// that would make a second token.
func (c *Client) CreateToken(ctx context.Context, scope, name string) (*httpapi.Token, error) {
	var t httpapi.Token
	_, err := c.do(ctx, call{method: http.MethodPost, path: "/v1/tokens", body: map[string]string{"scope": scope, "name": name}}, &t)
	return &t, err
}

// ListTokens lists API tokens without their secrets (admin).
func (c *Client) ListTokens(ctx context.Context) ([]httpapi.Token, error) {
	var out struct {
		Tokens []httpapi.Token `json:"tokens"`
	}
	_, err := c.do(ctx, read("/v1/tokens"), &out)
	return out.Tokens, err
}

// RevokeToken revokes an API token (admin).
func (c *Client) RevokeToken(ctx context.Context, id int64) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, path: "/v1/tokens/" + strconv.FormatInt(id, 10)}, nil)
	return err
}
