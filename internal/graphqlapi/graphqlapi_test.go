package graphqlapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/graphqlapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// TestMain checks for leaked goroutines. net/http lingers up to half a
// second on a connection whose request body was refused unread (to let
// the client see the answer before the close): that is the server's, not
// a leak of the face.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

// harness is the GraphQL face over an engine on a fresh embedded store,
// served on a loopback socket.
type harness struct {
	eng    *engine.Engine
	url    string
	client *http.Client
	logs   *bytes.Buffer
}

func newHarness(t *testing.T, cfg engine.Config, opts graphqlapi.Options) *harness {
	t.Helper()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg.Store = st
	cfg.Logger = slog.New(slog.DiscardHandler)
	eng, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	var mu sync.Mutex
	opts.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, logs}, nil))
	mux := http.NewServeMux()
	graphqlapi.New(eng, opts).Mount(mux)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln) //nolint:errcheck // ends with Close
	tr := &http.Transport{}
	t.Cleanup(func() {
		eng.StopWaiting() // ends subscriptions
		tr.CloseIdleConnections()
		hs.Close()
	})
	return &harness{eng: eng, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, logs: logs}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type gqlError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

type gqlResponse struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []gqlError                 `json:"errors"`
	status int
}

func (r gqlResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions[graphqlapi.CodeExtension].(string)
	return c
}

func (h *harness) postRaw(t *testing.T, body []byte) gqlResponse {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+graphqlapi.Path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := gqlResponse{status: resp.StatusCode}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("status %d, body %s: %v", resp.StatusCode, raw, err)
	}
	return out
}

func (h *harness) post(t *testing.T, query string, vars map[string]any) gqlResponse {
	t.Helper()
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		t.Fatal(err)
	}
	return h.postRaw(t, body)
}

func (h *harness) waitSubscribers(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.eng.Subscribers() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d subscribers after 30s, want %d", h.eng.Subscribers(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDocumentLimits checks each limit on a document: under it the
// operation runs, over it the whole operation is refused before anything
// runs, with its code.
func TestDocumentLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{MaxDepth: 4, MaxAliases: 2, MaxComplexity: 500, MaxTokens: 200, Introspection: true})
	// Each case's mutations enqueue jobs of their own kind, so that the
	// check below sees only its own case's jobs (the cases run at once).
	aliases := func(n int) string {
		var b strings.Builder
		b.WriteString("mutation {")
		for i := range n {
			fmt.Fprintf(&b, " e%d: enqueue(input: {kind: \"aliases.%d\"}) { id }", i, n)
		}
		return b.String() + " }"
	}
	cases := []struct {
		name, query string
		code        string // "" runs
	}{
		{"depth at the limit", `{ jobs { edges { node { id } } } }`, ""},
		{"depth past the limit", `{ jobs { edges { node { errors { message } } } } }`, graphqlapi.CodeDepthLimit},
		{"depth through fragments", `{ jobs { ...A } } fragment A on JobConnection { edges { ...B } } fragment B on JobEdge { node { errors { at } } }`, graphqlapi.CodeDepthLimit},
		{"depth through an inline fragment", `{ jobs { ... on JobConnection { edges { node { errors { at } } } } } }`, graphqlapi.CodeDepthLimit},
		{"aliases at the limit", aliases(2), ""},
		{"aliases past the limit", aliases(3), graphqlapi.CodeAliasLimit},
		{"aliases in a fragment", `{ ...F } fragment F on Query { a: queues { name } b: queues { name } c: stats { queues } }`, graphqlapi.CodeAliasLimit},
		{"complexity within the limit", `{ jobs(first: 10) { nodes { id kind } } }`, ""},
		{"complexity past the limit by page size", `{ jobs(first: 1000) { nodes { id } } }`, "COMPLEXITY_LIMIT_EXCEEDED"},
		{"tokens past the limit", `{ ` + strings.Repeat("__typename ", 250) + `}`, "GRAPHQL_PARSE_FAILED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			res := h.post(t, c.query, nil)
			if got := res.code(); got != c.code {
				t.Fatalf("code %q (%+v), want %q", got, res.Errors, c.code)
			}
			if c.code != "" {
				if res.Data != nil {
					t.Errorf("a refused operation answered data %v", res.Data)
				}
				if !strings.Contains(res.Errors[0].Message, "limit") && c.code != "GRAPHQL_PARSE_FAILED" {
					t.Errorf("message %q does not say which limit", res.Errors[0].Message)
				}
				after, err := h.eng.List(t.Context(), listAll())
				if err != nil {
					t.Fatal(err)
				}
				for _, j := range after.Jobs {
					if strings.Contains(c.query, `"`+j.Kind+`"`) {
						t.Errorf("a refused mutation enqueued job %d of kind %s", j.ID, j.Kind)
					}
				}
			}
		})
	}
}

// TestBodyLimit checks the request body limit: a declared length over it
// is refused at once with 413 and code too_large, and a chunked body
// that grows past it is cut off.
func TestBodyLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{MaxBodyBytes: 64 << 10})
	big := `{"query":"{ __typename }","variables":{"pad":"` + strings.Repeat("x", 70<<10) + `"}}`
	res := h.postRaw(t, []byte(big))
	if res.status != http.StatusRequestEntityTooLarge || res.code() != "too_large" {
		t.Errorf("declared length past the limit: %d %+v", res.status, res.Errors)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+graphqlapi.Path, io.MultiReader(strings.NewReader(big)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !bytes.Contains(raw, []byte(`"code":"too_large"`)) {
		t.Errorf("a chunked body past the limit: %d %s", resp.StatusCode, raw)
	}
	// A chunked body within the limit is read and runs.
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPost, h.url+graphqlapi.Path, io.MultiReader(strings.NewReader(`{"query":"{ __typename }"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err = h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(raw) != `{"data":{"__typename":"Query"}}` {
		t.Errorf("a small chunked body: %d %s", resp.StatusCode, raw)
	}
	if res := h.post(t, `{ __typename }`, map[string]any{"pad": strings.Repeat("x", 1000)}); len(res.Errors) > 0 {
		t.Errorf("a small body: %+v", res.Errors)
	}
}

// TestAdmission checks that an overloaded server refuses an operation
// with code overloaded and a retry time, and that a subscription or a
// lease counts as a long call while a query does not.
func TestAdmission(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var calls []bool
	refuse := false
	h := newHarness(t, engine.Config{}, graphqlapi.Options{Admit: func(long bool) (func(), error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, long)
		if refuse {
			return nil, fmt.Errorf("the server is at its limit of requests in progress: %w", job.ErrOverloaded)
		}
		return func() {}, nil
	}})
	h.post(t, `{ queues { name } }`, nil)
	h.post(t, `mutation { leaseJobs(input: {queues: ["q"]}) { id } }`, nil)
	mu.Lock()
	refuse = true
	mu.Unlock()
	res := h.post(t, `{ queues { name } }`, nil)
	if res.code() != "overloaded" || res.Errors[0].Extensions[graphqlapi.RetryAfterExtension] != float64(1) {
		t.Errorf("refused: %+v, want code overloaded with retry_after 1", res.Errors)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []bool{false, true, false}; fmt.Sprint(calls) != fmt.Sprint(want) {
		t.Errorf("admitted as long: %v, want %v", calls, want)
	}
}

// TestInternalErrorHidden checks that an error outside the error table
// reaches the client as "internal error" with code internal, and is
// logged in full.
func TestInternalErrorHidden(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{Admit: func(bool) (func(), error) {
		return nil, errors.New("secret detail of a broken store")
	}})
	res := h.post(t, `{ queues { name } }`, nil)
	if res.code() != "internal" || res.Errors[0].Message != "internal error" {
		t.Errorf("got %+v, want internal error", res.Errors)
	}
	if !strings.Contains(h.logs.String(), "secret detail of a broken store") {
		t.Errorf("the log does not hold the error: %s", h.logs.String())
	}
}

func listAll() store.ListParams { return store.ListParams{Limit: 1000} }

// wsMsg is a graphql-transport-ws message.
type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func (h *harness) dial(t *testing.T, ctx context.Context) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.url, "http")+graphqlapi.Path, &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Body != nil {
		resp.Body.Close()
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	conn.SetReadLimit(1 << 20)
	return conn
}

func wsRead(t *testing.T, ctx context.Context, conn *websocket.Conn) wsMsg {
	t.Helper()
	for {
		var m wsMsg
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatalf("read: %v", err)
		}
		if m.Type == "ping" {
			if err := wsjson.Write(ctx, conn, wsMsg{Type: "pong"}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		return m
	}
}

func wsInit(t *testing.T, ctx context.Context, conn *websocket.Conn) {
	t.Helper()
	if err := wsjson.Write(ctx, conn, wsMsg{Type: "connection_init"}); err != nil {
		t.Fatal(err)
	}
	if m := wsRead(t, ctx, conn); m.Type != "connection_ack" {
		t.Fatalf("got %s, want connection_ack", m.Type)
	}
}

func wsSubscribe(t *testing.T, ctx context.Context, conn *websocket.Conn, id, query string) {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query})
	if err := wsjson.Write(ctx, conn, wsMsg{ID: id, Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
}

// TestSlowSubscriberDropped checks that a subscriber that falls behind by
// more than the engine's buffer is dropped, and that its stream's last
// message is an error with code overloaded and the engine's reason,
// followed by complete.
func TestSlowSubscriberDropped(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{EventBuffer: 1}, graphqlapi.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := h.dial(t, ctx)
	wsInit(t, ctx, conn)
	wsSubscribe(t, ctx, conn, "s", `subscription { jobEvents { type job_id } }`)
	h.waitSubscribers(t, 1)
	// Bursts of inserts publish far faster than one subscriber drains a
	// buffer of one; burst until the engine drops it.
	specs := make([]job.Spec, 200)
	for i := range specs {
		specs[i] = job.Spec{Kind: "burst"}
	}
	for i := 0; h.eng.Subscribers() == 1; i++ {
		if i == 100 {
			t.Fatal("the subscriber was never dropped")
		}
		if _, err := h.eng.Enqueue(ctx, specs...); err != nil {
			t.Fatal(err)
		}
	}
	for {
		m := wsRead(t, ctx, conn)
		if m.Type != "next" {
			t.Fatalf("got %s %s before the error", m.Type, m.Payload)
		}
		var res gqlResponse
		if err := json.Unmarshal(m.Payload, &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Errors) == 0 {
			continue // an event read before the drop
		}
		if res.code() != "overloaded" || !strings.Contains(res.Errors[0].Message, "subscriber too slow") {
			t.Errorf("the last message: %s, want code overloaded and the engine's reason", m.Payload)
		}
		break
	}
	if m := wsRead(t, ctx, conn); m.Type != "complete" || m.ID != "s" {
		t.Errorf("got %s %s, want complete s", m.Type, m.ID)
	}
	conn.Close(websocket.StatusNormalClosure, "")
}

// TestSubscriptionsPerConnection checks the limit on one WebSocket's
// subscriptions: the one past it is refused with code overloaded, and a
// slot freed by complete can be used again.
func TestSubscriptionsPerConnection(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{MaxSubscriptionsPerConn: 2})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := h.dial(t, ctx)
	wsInit(t, ctx, conn)
	const q = `subscription { jobEvents { type } }`
	wsSubscribe(t, ctx, conn, "a", q)
	wsSubscribe(t, ctx, conn, "b", q)
	h.waitSubscribers(t, 2)
	wsSubscribe(t, ctx, conn, "c", q)
	m := wsRead(t, ctx, conn)
	var res gqlResponse
	if err := json.Unmarshal(m.Payload, &res); err != nil || m.ID != "c" || res.code() != "overloaded" {
		t.Fatalf("a third subscription: %s %s %s, want an error with code overloaded", m.Type, m.ID, m.Payload)
	}
	if m := wsRead(t, ctx, conn); m.Type != "complete" || m.ID != "c" {
		t.Fatalf("got %s %s, want complete c", m.Type, m.ID)
	}
	if err := wsjson.Write(ctx, conn, wsMsg{ID: "a", Type: "complete"}); err != nil {
		t.Fatal(err)
	}
	h.waitSubscribers(t, 1)
	wsSubscribe(t, ctx, conn, "d", q)
	h.waitSubscribers(t, 2)
	if _, err := h.eng.Enqueue(ctx, job.Spec{Kind: "k"}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		m := wsRead(t, ctx, conn)
		if m.Type == "complete" && m.ID == "a" {
			continue // gqlgen confirms the client's complete
		}
		if m.Type != "next" {
			t.Fatalf("got %s %s %s", m.Type, m.ID, m.Payload)
		}
		got[m.ID] = true
	}
	if !got["b"] || !got["d"] {
		t.Errorf("events went to %v, want b and d", got)
	}
	conn.Close(websocket.StatusNormalClosure, "")
	h.waitSubscribers(t, 0)
}

// TestWebSocketInitTimeout checks that a connection that never sends
// connection_init is closed after the init timeout.
func TestWebSocketInitTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{WSInitTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := h.dial(t, ctx)
	var m wsMsg
	err := wsjson.Read(ctx, conn, &m)
	if code := websocket.CloseStatus(err); code != 4400 && code != websocket.StatusProtocolError {
		t.Errorf("no connection_init: %v (close status %d), want the connection closed", err, code)
	}
}

// TestSubscriptionNeedsAStream checks that a subscription posted for one
// JSON answer is refused at once, not left waiting for an event.
func TestSubscriptionNeedsAStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{})
	res := h.post(t, `subscription { jobEvents { type } }`, nil)
	if res.code() != "invalid_argument" || !strings.Contains(res.Errors[0].Message, "text/event-stream") {
		t.Errorf("got %+v, want invalid_argument naming the streams", res.Errors)
	}
	if n := h.eng.Subscribers(); n != 0 {
		t.Errorf("%d subscribers", n)
	}
}

// TestWebSocketEndsWhenServerStops checks that an open WebSocket, which
// the HTTP server's graceful stop does not track, is closed when the
// engine stops serving, after its subscription ends with code
// unavailable.
func TestWebSocketEndsWhenServerStops(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	conn := h.dial(t, ctx)
	wsInit(t, ctx, conn)
	wsSubscribe(t, ctx, conn, "s", `subscription { jobEvents { type } }`)
	h.waitSubscribers(t, 1)
	h.eng.StopWaiting()
	var codes []string
	for {
		var m wsMsg
		err := wsjson.Read(ctx, conn, &m)
		if err != nil {
			if websocket.CloseStatus(err) == -1 && !errors.Is(err, io.EOF) {
				t.Fatalf("read: %v, want the server to close", err)
			}
			break
		}
		var res gqlResponse
		if m.Type == "next" && json.Unmarshal(m.Payload, &res) == nil && res.code() != "" {
			codes = append(codes, res.code())
		}
	}
	if fmt.Sprint(codes) != "[unavailable]" {
		t.Errorf("errors before the close: %v, want [unavailable]", codes)
	}
}

// TestOnlyJSONPosts checks that anything but a JSON POST (or a WebSocket)
// is refused with a GraphQL error and a code, not gqlgen's bare text.
func TestOnlyJSONPosts(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{}, graphqlapi.Options{})
	for _, c := range []struct{ method, contentType string }{
		{http.MethodPost, "text/plain"},
		{http.MethodPost, "application/x-www-form-urlencoded"},
		{http.MethodPost, ""},
		{http.MethodPut, "application/json"},
	} {
		req, err := http.NewRequestWithContext(t.Context(), c.method, h.url+graphqlapi.Path, strings.NewReader(`{"query":"{ __typename }"}`))
		if err != nil {
			t.Fatal(err)
		}
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		resp, err := h.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType || !bytes.Contains(raw, []byte(`"code":"invalid_argument"`)) {
			t.Errorf("%s %q: %d %s", c.method, c.contentType, resp.StatusCode, raw)
		}
	}
}

// TestSlowSubscriberDroppedSSE is TestSlowSubscriberDropped over
// server-sent events: the same last message, then event: complete.
func TestSlowSubscriberDroppedSSE(t *testing.T) {
	t.Parallel()
	h := newHarness(t, engine.Config{EventBuffer: 1}, graphqlapi.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url+graphqlapi.Path, strings.NewReader(`{"query":"subscription { jobEvents { type } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Transport: h.client.Transport}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h.waitSubscribers(t, 1)
	specs := make([]job.Spec, 200)
	for i := range specs {
		specs[i] = job.Spec{Kind: "burst"}
	}
	for i := 0; h.eng.Subscribers() == 1; i++ {
		if i == 100 {
			t.Fatal("the subscriber was never dropped")
		}
		if _, err := h.eng.Enqueue(ctx, specs...); err != nil {
			t.Fatal(err)
		}
	}
	body, err := io.ReadAll(resp.Body) // the stream ends after the error
	if err != nil {
		t.Fatal(err)
	}
	events := strings.Split(strings.TrimSpace(string(body)), "\n\n")
	last, errEvent := events[len(events)-1], events[len(events)-2]
	if last != "event: complete" {
		t.Errorf("the stream ends with %q, want event: complete", last)
	}
	data, ok := strings.CutPrefix(errEvent, "event: next\ndata: ")
	var res gqlResponse
	if !ok || json.Unmarshal([]byte(data), &res) != nil || res.code() != "overloaded" || !strings.Contains(res.Errors[0].Message, "subscriber too slow") {
		t.Errorf("the last message: %q, want an error with code overloaded and the engine's reason", errEvent)
	}
}
