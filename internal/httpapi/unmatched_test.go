package httpapi_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestUnmatchedRoutesAnswerWithProblems checks that a /v1 path no route
// takes gets a 404 problem, and a known path with the wrong method a 405
// problem with Allow, instead of ServeMux's plain text.
func TestUnmatchedRoutesAnswerWithProblems(t *testing.T) {
	t.Parallel()
	base := idemServer(t)
	cases := []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/v1/nothing-here", 404, "not_found", ""},
		{"POST", "/v1/jobs/1/explode", 404, "not_found", ""},
		{"PUT", "/v1/jobs", 405, "invalid_argument", "GET, POST"},
		{"GET", "/v1/lease", 405, "invalid_argument", "POST"},
		{"PATCH", "/v1/jobs/1", 405, "invalid_argument", "GET, DELETE"},
	}
	for _, c := range cases {
		req, _ := http.NewRequestWithContext(t.Context(), c.method, base+c.path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/problem+json" || resp.Header.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d %q Allow %q, want %d problem Allow %q", c.method, c.path, resp.StatusCode,
				resp.Header.Get("Content-Type"), resp.Header.Get("Allow"), c.status, c.allow)
		}
	}
}
