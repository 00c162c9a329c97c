package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/job"
)

// Problem is an RFC 9457 problem details body. Code is Drover's stable,
// machine-readable error code (job.Code); Type is a URN made from it.
type Problem struct { //nolint:errname // the RFC 9457 name, used in the OpenAPI document
	Type   string `json:"type" doc:"A URN naming the problem type: urn:drover:problem:CODE."`
	Title  string `json:"title" doc:"The HTTP status text."`
	Status int    `json:"status" doc:"The HTTP status code."`
	Detail string `json:"detail,omitempty" doc:"What went wrong, for people."`
	Code   string `json:"code" doc:"Stable machine-readable code: invalid_argument, too_large, not_found, lease_lost, invalid_state, conflict, idempotency_mismatch, overloaded, unavailable, storage_full, unauthorized, forbidden, internal."`
	// Errors lists individual problems, for example each invalid field.
	Errors []*huma.ErrorDetail `json:"errors,omitempty" doc:"Individual problems, such as each invalid field."`

	headers http.Header
}

// Error implements error.
func (p *Problem) Error() string { return p.Detail }

// GetStatus implements huma.StatusError.
func (p *Problem) GetStatus() int { return p.Status }

// ContentType implements huma.ContentTypeFilter: problems are
// application/problem+json.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" {
		return "application/problem+json"
	}
	return ct
}

// GetHeaders implements huma.HeadersError.
func (p *Problem) GetHeaders() http.Header { return p.headers }

// codeOfStatus gives the stable code of a status that huma itself
// produced (malformed requests, schema violations, oversized bodies).
func codeOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return "invalid_argument"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusTooManyRequests:
		return "overloaded"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusInsufficientStorage:
		return "storage_full"
	case http.StatusUnauthorized:
		return "unauthorized"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusConflict:
		return "conflict"
	}
	if status >= 500 {
		return "internal"
	}
	return "invalid_argument"
}

func newProblem(status int, code, detail string) *Problem {
	return &Problem{
		Type:   "urn:drover:problem:" + code,
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Code:   code,
	}
}

// hookHumaErrors makes huma's own errors (bad JSON, schema violations,
// oversized bodies) problems with Drover's codes. huma.NewError is a
// package variable, so this is done once for the process.
func hookHumaErrors() {
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		// A field the API does not know is a malformed request (400), not
		// a well-formed one that breaks a rule (422): it is most often a
		// typo, and nothing was checked past it.
		if status == http.StatusUnprocessableEntity && hasUnknownField(errs) {
			status = http.StatusBadRequest
		}
		p := newProblem(status, codeOfStatus(status), msg)
		for _, err := range errs {
			if err == nil {
				continue
			}
			var d huma.ErrorDetailer
			if errors.As(err, &d) {
				p.Errors = append(p.Errors, d.ErrorDetail())
			} else {
				p.Errors = append(p.Errors, &huma.ErrorDetail{Message: err.Error()})
			}
		}
		return p
	}
}

func hasUnknownField(errs []error) bool {
	for _, err := range errs {
		var d huma.ErrorDetailer
		if errors.As(err, &d) && d.ErrorDetail().Message == "unexpected property" {
			return true
		}
	}
	return false
}

// problemOf turns an engine error into the problem the client sees.
// Internal errors are logged in full by the caller and shown only as
// "internal error".
func problemOf(err error) *Problem {
	e := errcode.Of(err)
	code, status := e.Code, e.HTTPStatus
	if code == errcode.Internal {
		return newProblem(status, code, "internal error")
	}
	p := newProblem(status, code, err.Error())
	var ve *job.ValidationError
	if errors.As(err, &ve) {
		p.Errors = []*huma.ErrorDetail{{Message: ve.Message, Location: "body." + ve.Field}}
	}
	if e.RetryAfter > 0 {
		p.headers = http.Header{"Retry-After": []string{strconv.Itoa(int(e.RetryAfter.Seconds()))}}
	}
	return p
}

// badQuery is a 400 for a query parameter huma could not check itself.
func badQuery(field, format string, a ...any) *Problem {
	p := newProblem(http.StatusBadRequest, "invalid_argument", fmt.Sprintf("invalid %s: %s", field, fmt.Sprintf(format, a...)))
	p.Errors = []*huma.ErrorDetail{{Message: fmt.Sprintf(format, a...), Location: "query." + field}}
	return p
}

// inFirstJob names the fields of a problem as those of jobs[0], for a
// batch of one: the engine prefixes fields with jobs[i]. only when there
// are several specs.
func inFirstJob(err error) error {
	var p *Problem
	if errors.As(err, &p) {
		for _, d := range p.Errors {
			if rest, ok := strings.CutPrefix(d.Location, "body."); ok && !strings.HasPrefix(rest, "jobs") {
				d.Location = "body.jobs[0]." + rest
			}
		}
	}
	return err
}

// inQuery moves the locations of a problem's errors from the body to the
// query, for operations whose engine fields are query parameters:
// problemOf places every field in the body.
func inQuery(err error) error {
	var p *Problem
	if errors.As(err, &p) {
		for _, d := range p.Errors {
			if rest, ok := strings.CutPrefix(d.Location, "body."); ok {
				d.Location = "query." + rest
			}
		}
	}
	return err
}
