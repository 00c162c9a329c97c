package graphqlapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/graphqlapi"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// documentCodes are the codes of refusals of a whole document, beside
// the error table's.
var documentCodes = []string{
	"GRAPHQL_PARSE_FAILED", "GRAPHQL_VALIDATION_FAILED", "COMPLEXITY_LIMIT_EXCEEDED",
	graphqlapi.CodeDepthLimit, graphqlapi.CodeAliasLimit, graphqlapi.CodeIntrospectionDisabled,
}

// FuzzRequest posts arbitrary bodies to the face, as JSON and as an SSE
// request, over a real engine: whatever the body, the answer is a
// GraphQL response (JSON with data or errors, or SSE events), never a
// server error, and every error carries a known code.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"query":"{ queues { name paused counts { total } } stats { queues } }"}`,
		`{"query":"query($id: ID!) { job(id: $id) { id state errors { message } } }","variables":{"id":"1"}}`,
		`{"query":"mutation($in: EnqueueInput!) { enqueue(input: $in) { id args duplicate } }","variables":{"in":{"kind":"k","args":{"a":[1,2.5,"x",null]},"delay":"1s","unique":{"by_args":true}}}}`,
		`{"query":"mutation { enqueueBatch(input: [{kind: \"a\"}, {kind: \"b\", depends_on: [\"1\"]}]) { id } }"}`,
		`{"query":"mutation { leaseJobs(input: {queues: [\"default\"], max: 2}) { id lease_token } }"}`,
		`{"query":"{ jobs(first: 2, after: \"AgAAAAAAAAAAAav8WopuTZMl\", order: desc, state: [available]) { edges { cursor } page_info { end_cursor } } }"}`,
		`{"query":"subscription { jobEvents(state: [running]) { type } }"}`,
		`{"query":"{ __schema { types { name } } }"}`,
		`{"query":"{ a: queues { name } ...F } fragment F on Query { stats { now } }","operationName":null}`,
		`{"query":"query A { queues { name } } query B { stats { queues } }","operationName":"B"}`,
		`{"query":"{ job(id: \"-1\") { id } }"}`,
		`{"query":"mutation { completeJob(id: 1, lease_token: \"t\", output: {x: 1}) { id } }"}`,
		`{"query":"{ jobs(`,
		`{"query":7}`,
		`{"variables":{}}`,
		`[{"query":"{ queues { name } }"}]`,
		`not json`,
		``,
	} {
		f.Add([]byte(seed), false)
	}
	f.Add([]byte(`{"query":"{ queues { name } }"}`), true)

	st, err := sqlitestore.Open(f.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.DiscardHandler)
	eng, err := engine.New(engine.Config{Store: st, Logger: log})
	if err != nil {
		f.Fatal(err)
	}
	defer eng.StopWaiting()
	mux := http.NewServeMux()
	graphqlapi.New(eng, graphqlapi.Options{Introspection: true, Logger: log, MaxBodyBytes: 1 << 20}).Mount(mux)

	f.Fuzz(func(t *testing.T, body []byte, sse bool) {
		if sse && bytes.Contains(body, []byte("subscription")) {
			return // a subscription over SSE streams until the client leaves
		}
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, graphqlapi.Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if sse {
			req.Header.Set("Accept", "text/event-stream")
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
		if sse {
			return
		}
		var res struct {
			Data   json.RawMessage `json:"data"`
			Errors []struct {
				Message    string         `json:"message"`
				Extensions map[string]any `json:"extensions"`
			} `json:"errors"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatalf("not a GraphQL response for %q: %s: %v", body, rec.Body.Bytes(), err)
		}
		if len(res.Data) == 0 && len(res.Errors) == 0 {
			t.Fatalf("neither data nor errors for %q: %s", body, rec.Body.Bytes())
		}
		for _, e := range res.Errors {
			code, _ := e.Extensions[graphqlapi.CodeExtension].(string)
			if errcode.Lookup(code).Code != code && !slices.Contains(documentCodes, code) {
				t.Errorf("error %q has code %q, neither the error table's nor a document refusal's", e.Message, code)
			}
			if code == errcode.Internal {
				t.Errorf("internal error for %q: %s", body, rec.Body.Bytes())
			}
		}
	})
}
