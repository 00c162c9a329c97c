// Package restclient is a Go client of Drover's REST API, used by the CLI
// and by the load generator. It speaks the wire types of package httpapi.
package restclient

import (
	"bytes"
	"context"
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

// Client talks to one server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the server at base (for example
// "http://127.0.0.1:8080"), sending token as a bearer token when set.
func New(base, token string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server %q: want an http:// or https:// URL", base)
	}
	if hc == nil {
		hc = &http.Client{Timeout: 2 * time.Minute}
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, hc: hc}, nil
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

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (when not nil). It returns the HTTP status.
func (c *Client) do(ctx context.Context, method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode >= 400 {
		var p struct {
			Code   string `json:"code"`
			Detail string `json:"detail"`
			Errors []struct {
				Message  string `json:"message"`
				Location string `json:"location"`
			} `json:"errors"`
		}
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, &p) == nil && p.Code != "" {
			e.Code, e.Detail = p.Code, p.Detail
			for _, d := range p.Errors {
				e.Fields = append(e.Fields, strings.TrimSpace(d.Location+": "+d.Message))
			}
		} else {
			e.Code, e.Detail = "http_error", strings.TrimSpace(string(data))
		}
		return resp.StatusCode, e
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode %s %s response: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

// Enqueue enqueues one job.
func (c *Client) Enqueue(ctx context.Context, r httpapi.EnqueueRequest) (*httpapi.Job, error) {
	var j httpapi.Job
	_, err := c.do(ctx, http.MethodPost, "/v1/jobs", r, &j)
	if err != nil {
		return nil, err
	}
	return &j, nil
}

// EnqueueBatch enqueues jobs, all or nothing.
func (c *Client) EnqueueBatch(ctx context.Context, rs []httpapi.EnqueueRequest) ([]httpapi.Job, error) {
	var out struct {
		Jobs []httpapi.Job `json:"jobs"`
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/jobs/batch", map[string]any{"jobs": rs}, &out)
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
	_, err := c.do(ctx, http.MethodGet, path, nil, &page)
	return &page, err
}

// GetJob returns one job.
func (c *Client) GetJob(ctx context.Context, id int64) (*httpapi.Job, error) {
	var j httpapi.Job
	_, err := c.do(ctx, http.MethodGet, "/v1/jobs/"+strconv.FormatInt(id, 10), nil, &j)
	return &j, err
}

// JobAction runs an operator action on a job: "cancel" or "retry".
func (c *Client) JobAction(ctx context.Context, id int64, action string) (*httpapi.Job, error) {
	var j httpapi.Job
	_, err := c.do(ctx, http.MethodPost, "/v1/jobs/"+strconv.FormatInt(id, 10)+"/"+action, nil, &j)
	return &j, err
}

// DeleteJob deletes a job.
func (c *Client) DeleteJob(ctx context.Context, id int64) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/jobs/"+strconv.FormatInt(id, 10), nil, nil)
	return err
}

// Queues lists the queues.
func (c *Client) Queues(ctx context.Context) ([]httpapi.Queue, error) {
	var out struct {
		Queues []httpapi.Queue `json:"queues"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/queues", nil, &out)
	return out.Queues, err
}

// SetQueuePaused pauses or resumes a queue.
func (c *Client) SetQueuePaused(ctx context.Context, name string, paused bool) (*httpapi.Queue, error) {
	verb := "resume"
	if paused {
		verb = "pause"
	}
	var q httpapi.Queue
	_, err := c.do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(name)+"/"+verb, nil, &q)
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

// Lease leases jobs, waiting up to r.Wait for one to arrive.
func (c *Client) Lease(ctx context.Context, r LeaseRequest) ([]httpapi.Job, error) {
	var out struct {
		Jobs []httpapi.Job `json:"jobs"`
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/lease", r, &out)
	return out.Jobs, err
}

// Complete completes a leased job.
func (c *Client) Complete(ctx context.Context, id int64, token string, output json.RawMessage) (*httpapi.Job, error) {
	body := map[string]any{"lease_token": token}
	if len(output) > 0 {
		body["output"] = output
	}
	var j httpapi.Job
	_, err := c.do(ctx, http.MethodPost, "/v1/jobs/"+strconv.FormatInt(id, 10)+"/complete", body, &j)
	return &j, err
}

// EnqueueID enqueues one job and returns only its id and whether it was a
// duplicate: cheaper than Enqueue when the caller needs no more, as in a
// load generator.
func (c *Client) EnqueueID(ctx context.Context, r httpapi.EnqueueRequest) (int64, bool, error) {
	var out struct {
		ID        int64 `json:"id"`
		Duplicate bool  `json:"duplicate"`
	}
	_, err := c.do(ctx, http.MethodPost, "/v1/jobs", r, &out)
	return out.ID, out.Duplicate, err
}

// CreateToken creates an API token (admin); the reply's Token field is the
// only time the secret is shown.
func (c *Client) CreateToken(ctx context.Context, scope, name string) (*httpapi.Token, error) {
	var t httpapi.Token
	_, err := c.do(ctx, http.MethodPost, "/v1/tokens", map[string]string{"scope": scope, "name": name}, &t)
	return &t, err
}

// ListTokens lists API tokens without their secrets (admin).
func (c *Client) ListTokens(ctx context.Context) ([]httpapi.Token, error) {
	var out struct {
		Tokens []httpapi.Token `json:"tokens"`
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes an API token (admin).
func (c *Client) RevokeToken(ctx context.Context, id int64) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+strconv.FormatInt(id, 10), nil, nil)
	return err
}
