package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	"github.com/droverhq/drover/internal/errcode"
	"github.com/droverhq/drover/internal/graphqlapi"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// gqlClient posts GraphQL operations as application/json.
type gqlClient struct {
	url    string
	client *http.Client
}

func newGQLClient(t *testing.T, base string) *gqlClient {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &gqlClient{url: base + graphqlapi.Path, client: &http.Client{Timeout: 30 * time.Second, Transport: tr}}
}

// gqlResponse is a GraphQL response, with the HTTP status it came with.
type gqlResponse struct {
	Data   map[string]json.RawMessage `json:"data"`
	Errors []gqlError                 `json:"errors"`
	status int
}

type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

func (e gqlError) code() string {
	c, _ := e.Extensions[graphqlapi.CodeExtension].(string)
	return c
}

// code returns the stable code of the response's first error, "" when it
// has none, after checking that an error of a root field arrives with
// status 200 and a code of the shared error table.
func (r *gqlResponse) code(t *testing.T) string {
	t.Helper()
	if len(r.Errors) == 0 {
		return ""
	}
	e := r.Errors[0]
	code := e.code()
	if code == "" {
		t.Fatalf("error %q has no extensions.code", e.Message)
	}
	if errcode.Lookup(code).Code != code {
		t.Errorf("error %q: code %q is not in the error table", e.Message, code)
	}
	if r.status != http.StatusOK {
		t.Errorf("error %q (%s) came with HTTP status %d, want 200", e.Message, code, r.status)
	}
	return code
}

// post sends one operation and decodes the response, whatever its status.
func (c *gqlClient) post(ctx context.Context, token, query string, vars map[string]any) (*gqlResponse, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := &gqlResponse{status: resp.StatusCode}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("status %d, body %s: %w", resp.StatusCode, raw, err)
	}
	return out, nil
}

func (c *gqlClient) do(t *testing.T, token, query string, vars map[string]any) *gqlResponse {
	t.Helper()
	res, err := c.post(t.Context(), token, query, vars)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return res
}

// sseEvents posts a subscription with Accept: text/event-stream and sends
// each message's JSON on the returned channel, closed when the stream
// ends. The first value is the HTTP status as a string ("200").
func (c *gqlClient) sseEvents(ctx context.Context, token, query string, vars map[string]any) (<-chan string, error) {
	body, err := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	// No client timeout: the stream lasts until ctx ends.
	resp, err := (&http.Client{Transport: c.client.Transport}).Do(req) //nolint:bodyclose // the reading goroutine closes it
	if err != nil {
		return nil, err
	}
	out := make(chan string, 16)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		out <- fmt.Sprint(resp.StatusCode)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				select {
				case out <- data:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// TestGraphQLScopeMatrix calls every root field of the GraphQL schema,
// and the query page, with every kind of caller (authtest): code
// unauthorized without a valid token, forbidden for a scope that does
// not allow the field, and otherwise an answer from the resolver. The
// root fields are read from the executable schema, so that a new field
// cannot escape the check, and the scopes expected are written out here,
// apart from the table the face uses (auth.Op). Subscriptions go over
// SSE.
func TestGraphQLScopeMatrix(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	creds := authtest.NewCredentials(t, st)
	st.Close()
	r := serve(t, cfg)
	c := newGQLClient(t, r.url)

	need := map[string]auth.Scope{
		"Query.job":              auth.ScopeRead,
		"Query.jobs":             auth.ScopeRead,
		"Query.queues":           auth.ScopeRead,
		"Query.stats":            auth.ScopeRead,
		"Mutation.enqueue":       auth.ScopeProducer,
		"Mutation.enqueueBatch":  auth.ScopeProducer,
		"Mutation.cancelJob":     auth.ScopeAdmin,
		"Mutation.retryJob":      auth.ScopeAdmin,
		"Mutation.deleteJob":     auth.ScopeAdmin,
		"Mutation.pauseQueue":    auth.ScopeAdmin,
		"Mutation.resumeQueue":   auth.ScopeAdmin,
		"Mutation.leaseJobs":     auth.ScopeWorker,
		"Mutation.heartbeatJob":  auth.ScopeWorker,
		"Mutation.completeJob":   auth.ScopeWorker,
		"Mutation.failJob":       auth.ScopeWorker,
		"Mutation.snoozeJob":     auth.ScopeWorker,
		"Subscription.jobEvents": auth.ScopeRead,
		"GET /graphql (page)":    authtest.Public,
		// Introspection describes the public schema, as /openapi.json
		// describes REST's.
		"Query.__schema": authtest.Public,
		"Query.__type":   authtest.Public,
	}
	schema := graphqlapi.NewExecutableSchema(graphqlapi.Config{}).Schema()
	var endpoints []authtest.Endpoint
	for _, root := range []*ast.Definition{schema.Query, schema.Mutation, schema.Subscription} {
		for _, f := range root.Fields {
			if f.Name == "__typename" {
				continue // answered by the executor, not a resolver
			}
			query, vars := gqlCall(schema, root, f)
			name := root.Name + "." + f.Name
			if _, ok := graphqlapi.Operation(name); !ok && !strings.HasPrefix(f.Name, "__") {
				t.Errorf("root field %s has no auth operation in graphqlapi", name)
			}
			if root == schema.Subscription {
				endpoints = append(endpoints, gqlSubscriptionEndpoint(r, c, name, query, vars))
				continue
			}
			endpoints = append(endpoints, authtest.Endpoint{Name: name, Call: func(ctx context.Context, bearer string) (authtest.Outcome, string, error) {
				res, err := c.post(ctx, bearer, query, vars)
				if err != nil {
					return "", "", err
				}
				return gqlOutcome(res.Errors)
			}})
		}
	}
	endpoints = append(endpoints, authtest.Endpoint{Name: "GET /graphql (page)", Call: func(ctx context.Context, bearer string) (authtest.Outcome, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
		if err != nil {
			return "", "", err
		}
		req.Header.Set("Accept", "text/html")
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			return "", "", err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return "", "", fmt.Errorf("status %d", resp.StatusCode)
		}
		return authtest.Allowed, "200", nil
	}})
	if n := authtest.Check(t, endpoints, need, creds); n != len(need)*len(creds) {
		t.Fatalf("checked %d calls, want %d", n, len(need)*len(creds))
	}
}

// gqlOutcome reads the token check's verdict from a response's errors.
func gqlOutcome(errs []gqlError) (authtest.Outcome, string, error) {
	if len(errs) == 0 {
		return authtest.Allowed, "data", nil
	}
	switch errs[0].code() {
	case errcode.Unauthorized:
		return authtest.Unauthenticated, errs[0].Message, nil
	case errcode.Forbidden:
		return authtest.Forbidden, errs[0].Message, nil
	case "":
		return "", "", fmt.Errorf("error without a code: %s", errs[0].Message)
	default:
		return authtest.Allowed, errs[0].code(), nil
	}
}

// gqlSubscriptionEndpoint subscribes over SSE and reads the first
// message. A refusal comes at once; a subscriber that was let in waits
// for an event, so the call makes events until one arrives.
func gqlSubscriptionEndpoint(r *running, c *gqlClient, name, query string, vars map[string]any) authtest.Endpoint {
	return authtest.Endpoint{Name: name, Call: func(ctx context.Context, bearer string) (authtest.Outcome, string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		events, err := c.sseEvents(ctx, bearer, query, vars)
		if err != nil {
			return "", "", err
		}
		if status := <-events; status != "200" {
			return "", "", fmt.Errorf("status %s", status)
		}
		poke := time.NewTicker(20 * time.Millisecond)
		defer poke.Stop()
		for {
			select {
			case data, ok := <-events:
				if !ok {
					return "", "", errors.New("the stream ended without a message")
				}
				var res gqlResponse
				if err := json.Unmarshal([]byte(data), &res); err != nil {
					return "", "", fmt.Errorf("%s: %w", data, err)
				}
				return gqlOutcome(res.Errors)
			case <-poke.C:
				if _, err := r.srv.Engine().Enqueue(ctx, job.Spec{Kind: "poke"}); err != nil {
					return "", "", err
				}
			case <-ctx.Done():
				return "", "", ctx.Err()
			}
		}
	}}
}

// gqlCall builds an operation that calls field of root with a value for
// each required argument, read from the schema, and selects __typename
// of an object answer.
func gqlCall(schema *ast.Schema, root *ast.Definition, f *ast.FieldDefinition) (string, map[string]any) {
	var decls, args []string
	vars := map[string]any{}
	for _, a := range f.Arguments {
		if !a.Type.NonNull {
			continue
		}
		decls = append(decls, "$"+a.Name+": "+a.Type.String())
		args = append(args, a.Name+": $"+a.Name)
		vars[a.Name] = gqlValue(schema, a.Type)
	}
	op := strings.ToLower(root.Name)
	q := op
	if len(decls) > 0 {
		q += "(" + strings.Join(decls, ", ") + ")"
	}
	q += " { " + f.Name
	if len(args) > 0 {
		q += "(" + strings.Join(args, ", ") + ")"
	}
	if def := schema.Types[f.Type.Name()]; def != nil && def.Kind == ast.Object {
		q += " { __typename }"
	}
	return q + " }", vars
}

// gqlValue is a valid value of a type: the required fields of an input,
// one item of a list.
func gqlValue(schema *ast.Schema, t *ast.Type) any {
	if t.Elem != nil {
		return []any{gqlValue(schema, t.Elem)}
	}
	switch t.NamedType {
	case "ID":
		return "1"
	case "Int":
		return 1
	case "Boolean":
		return false
	case "Duration":
		return "1s"
	case "JSON":
		return map[string]any{}
	case "String":
		return "x"
	}
	def := schema.Types[t.NamedType]
	if def != nil && def.Kind == ast.InputObject {
		obj := map[string]any{}
		for _, f := range def.Fields {
			if f.Type.NonNull {
				obj[f.Name] = gqlValue(schema, f.Type)
			}
		}
		return obj
	}
	if def != nil && def.Kind == ast.Enum && len(def.EnumValues) > 0 {
		return def.EnumValues[0].Name
	}
	return nil
}

// TestGraphQLSubscriptionSSE subscribes over server-sent events on both
// stores and receives the events of a real enqueue, lease and complete,
// filtered by queue.
func TestGraphQLSubscriptionSSE(t *testing.T) {
	t.Parallel()
	for _, pg := range []bool{false, true} {
		t.Run(map[bool]string{false: "embedded", true: "postgres"}[pg], func(t *testing.T) {
			t.Parallel()
			cfg := testConfig(t)
			if pg {
				cfg.DatabaseURL = pgtest.TestURL(t)
				cfg.DatabaseSchema = pgtest.TestSchema(t, cfg.DatabaseURL)
			}
			r := serve(t, cfg)
			c := newGQLClient(t, r.url)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			events, err := c.sseEvents(ctx, "", `subscription($q: [String!]) { jobEvents(queue: $q) { type job_id queue from_state to_state attempt } }`,
				map[string]any{"q": []string{"sse"}})
			if err != nil {
				t.Fatal(err)
			}
			if status := <-events; status != "200" {
				t.Fatalf("status %s", status)
			}
			waitSubscribers(t, r, 1)
			eng := r.srv.Engine()
			if _, err := eng.Enqueue(ctx, job.Spec{Kind: "other", Queue: "elsewhere"}); err != nil {
				t.Fatal(err)
			}
			res, err := eng.Enqueue(ctx, job.Spec{Kind: "k", Queue: "sse"})
			if err != nil {
				t.Fatal(err)
			}
			leased, err := c.post(ctx, "", `mutation { leaseJobs(input: {queues: ["sse"]}) { id lease_token } }`, nil)
			if err != nil || len(leased.Errors) > 0 {
				t.Fatalf("lease: %v %+v", err, leased)
			}
			var jobs []struct {
				ID         string `json:"id"`
				LeaseToken string `json:"lease_token"`
			}
			if err := json.Unmarshal(leased.Data["leaseJobs"], &jobs); err != nil || len(jobs) != 1 {
				t.Fatalf("lease answered %s: %v", leased.Data["leaseJobs"], err)
			}
			done, err := c.post(ctx, "", `mutation($id: ID!, $t: String!) { completeJob(id: $id, lease_token: $t) { state } }`,
				map[string]any{"id": jobs[0].ID, "t": jobs[0].LeaseToken})
			if err != nil || len(done.Errors) > 0 {
				t.Fatalf("complete: %v %+v", err, done)
			}
			id := fmt.Sprint(res[0].Job.ID)
			want := []string{
				`{"type":"inserted","job_id":"` + id + `","queue":"sse","from_state":null,"to_state":"available","attempt":0}`,
				`{"type":"leased","job_id":"` + id + `","queue":"sse","from_state":"available","to_state":"running","attempt":1}`,
				`{"type":"completed","job_id":"` + id + `","queue":"sse","from_state":"running","to_state":"completed","attempt":1}`,
			}
			for _, w := range want {
				select {
				case data := <-events:
					var msg struct {
						Data struct {
							JobEvents json.RawMessage `json:"jobEvents"`
						} `json:"data"`
					}
					if err := json.Unmarshal([]byte(data), &msg); err != nil {
						t.Fatalf("%s: %v", data, err)
					}
					if got := string(msg.Data.JobEvents); got != w {
						t.Errorf("event\n got  %s\n want %s", got, w)
					}
				case <-ctx.Done():
					t.Fatalf("no event %s", w)
				}
			}
			cancel()
			waitSubscribers(t, r, 0)
		})
	}
}

// wsMsg is a graphql-transport-ws message.
type wsMsg struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

// wsDial opens a graphql-transport-ws connection and sends
// connection_init with payload.
func wsDial(t *testing.T, ctx context.Context, base string, header http.Header, payload any) *websocket.Conn {
	t.Helper()
	conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+graphqlapi.Path, &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: header,
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	if resp.Body != nil {
		resp.Body.Close()
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	if conn.Subprotocol() != "graphql-transport-ws" {
		t.Fatalf("subprotocol %q", conn.Subprotocol())
	}
	init := wsMsg{Type: "connection_init"}
	if payload != nil {
		init.Payload, _ = json.Marshal(payload)
	}
	if err := wsjson.Write(ctx, conn, init); err != nil {
		t.Fatal(err)
	}
	return conn
}

// wsRead reads the next message other than a ping (answered) or pong.
func wsRead(t *testing.T, ctx context.Context, conn *websocket.Conn) wsMsg {
	t.Helper()
	for {
		var m wsMsg
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatalf("read: %v", err)
		}
		switch m.Type {
		case "ping":
			if err := wsjson.Write(ctx, conn, wsMsg{Type: "pong"}); err != nil {
				t.Fatal(err)
			}
		case "pong":
		default:
			return m
		}
	}
}

func wsSubscribe(t *testing.T, ctx context.Context, conn *websocket.Conn, id, query string, vars map[string]any) {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	if err := wsjson.Write(ctx, conn, wsMsg{ID: id, Type: "subscribe", Payload: payload}); err != nil {
		t.Fatal(err)
	}
}

// TestGraphQLSubscriptionWebSocket speaks graphql-transport-ws with tokens
// enforced: the token in connection_init's payload is accepted, a bad one
// ends the connection with 4403, a read token subscribes and receives a
// real state change, and a mutation over the same socket is refused for
// its scope with code forbidden.
func TestGraphQLSubscriptionWebSocket(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tok := makeTokens(t, st)
	st.Close()
	r := serve(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	t.Run("bad token", func(t *testing.T) { //nolint:paralleltest // the steps share one server, in order
		conn := wsDial(t, ctx, r.url, nil, map[string]any{"authorization": "Bearer drv_1_nope"})
		var m wsMsg
		err := wsjson.Read(ctx, conn, &m)
		for err == nil && m.Type != "connection_ack" {
			err = wsjson.Read(ctx, conn, &m)
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != 4403 || !strings.Contains(ce.Reason, "unknown or revoked") {
			t.Errorf("a bad token: message %q, then %v; want close 4403 saying why", m.Type, err)
		}
	})

	t.Run("another origin", func(t *testing.T) { //nolint:paralleltest // the steps share one server, in order
		conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(r.url, "http")+graphqlapi.Path, &websocket.DialOptions{
			Subprotocols: []string{"graphql-transport-ws"}, HTTPHeader: http.Header{"Origin": {"https://elsewhere.example"}},
		})
		if err == nil {
			conn.CloseNow() //nolint:errcheck // refused below
			t.Fatal("a page of another origin opened a WebSocket")
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("another origin: %v, want 403", err)
		}
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
	})

	t.Run("read token from header", func(t *testing.T) { //nolint:paralleltest // the steps share one server, in order
		conn := wsDial(t, ctx, r.url, http.Header{"Authorization": {"Bearer " + tok[auth.ScopeRead]}}, nil)
		if m := wsRead(t, ctx, conn); m.Type != "connection_ack" {
			t.Fatalf("got %s, want connection_ack", m.Type)
		}
		conn.Close(websocket.StatusNormalClosure, "")
	})

	conn := wsDial(t, ctx, r.url, nil, map[string]any{"authorization": "Bearer " + tok[auth.ScopeRead]})
	if m := wsRead(t, ctx, conn); m.Type != "connection_ack" {
		t.Fatalf("got %s, want connection_ack", m.Type)
	}
	wsSubscribe(t, ctx, conn, "s1", `subscription { jobEvents(queue: ["ws"], state: [available]) { type queue to_state } }`, nil)
	waitSubscribers(t, r, 1)
	if _, err := r.srv.Engine().Enqueue(ctx, job.Spec{Kind: "k", Queue: "ws"}); err != nil {
		t.Fatal(err)
	}
	m := wsRead(t, ctx, conn)
	if m.Type != "next" || m.ID != "s1" || string(m.Payload) != `{"data":{"jobEvents":{"type":"inserted","queue":"ws","to_state":"available"}}}` {
		t.Errorf("got %s %s %s", m.Type, m.ID, m.Payload)
	}

	wsSubscribe(t, ctx, conn, "m1", `mutation { pauseQueue(name: "ws") { paused } }`, nil)
	m = wsRead(t, ctx, conn)
	var res gqlResponse
	if err := json.Unmarshal(m.Payload, &res); err != nil || m.ID != "m1" || len(res.Errors) == 0 || res.Errors[0].code() != errcode.Forbidden {
		t.Errorf("a read token pauses over WebSocket: %s %s %s, want an error with code forbidden", m.Type, m.ID, m.Payload)
	}
	if m := wsRead(t, ctx, conn); m.Type != "complete" || m.ID != "m1" {
		t.Errorf("got %s %s, want complete m1", m.Type, m.ID)
	}

	if err := wsjson.Write(ctx, conn, wsMsg{ID: "s1", Type: "complete"}); err != nil {
		t.Fatal(err)
	}
	waitSubscribers(t, r, 0)
	conn.Close(websocket.StatusNormalClosure, "")
}

// TestGraphQLErrorShape checks what the GraphQL column of TestFacesAgree
// does not: an error names the invalid field in extensions.field (the
// engine's name, or the argument's path for a value gqlgen refused) and
// its root field in path, and a document that does not parse keeps
// gqlgen's code.
func TestGraphQLErrorShape(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	c := newGQLClient(t, r.url)
	res := c.do(t, "", `mutation { enqueue(input: {kind: "k", priority: 42}) { id } }`, nil)
	if code := res.code(t); code != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "input.priority" {
		t.Errorf("priority 42: %+v, want invalid_argument naming input.priority", res.Errors)
	}
	if !slices.Equal(res.Errors[0].Path, []any{"enqueue"}) {
		t.Errorf("path %v, want [enqueue]", res.Errors[0].Path)
	}
	res = c.do(t, "", `query($id: ID!) { job(id: $id) { id } }`, map[string]any{"id": "x"})
	if code := res.code(t); code != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "id" {
		t.Errorf("id x: %+v, want invalid_argument naming id", res.Errors)
	}
	res = c.do(t, "", `mutation { enqueue(input: {kind: "k", delay: "soon"}) { id } }`, nil)
	if code := res.code(t); code != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "input.delay" {
		t.Errorf("delay soon: %+v, want invalid_argument naming input.delay", res.Errors)
	}
	res = c.do(t, "", `mutation { enqueueBatch(input: [{kind: "k"}, {kind: "bad kind"}]) { id } }`, nil)
	if code := res.code(t); code != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "input[1].kind" {
		t.Errorf("a bad kind in a batch: %+v, want invalid_argument naming input[1].kind", res.Errors)
	}
	res = c.do(t, "", `mutation { leaseJobs(input: {queues: ["no spaces"]}) { id } }`, nil)
	if code := res.code(t); code != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "input.queues[0]" {
		t.Errorf("a bad queue: %+v, want invalid_argument naming input.queues[0]", res.Errors)
	}
	// A document that does not parse keeps gqlgen's code.
	res = c.do(t, "", `{ jobs(`, nil)
	if len(res.Errors) == 0 || res.Errors[0].code() != "GRAPHQL_PARSE_FAILED" {
		t.Errorf("a broken document: %+v", res.Errors)
	}
}

// TestGraphQLPage checks the query page: served at /graphql to a
// browser, with every script and style it references served from the
// binary, and no reference to another site.
func TestGraphQLPage(t *testing.T) {
	t.Parallel()
	r := serve(t, testConfig(t))
	c := newGQLClient(t, r.url)
	get := func(path, accept string) (int, http.Header, string) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.url+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	status, h, page := get(graphqlapi.Path, "text/html,application/xhtml+xml")
	if status != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("GET %s: %d %s", graphqlapi.Path, status, h.Get("Content-Type"))
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("the page references %d assets: %s", len(refs), page)
	}
	served := map[string]bool{}
	for _, ref := range refs {
		served[ref[1]] = true
	}
	for _, a := range graphqlapi.PageAssets() {
		if !served[a] {
			t.Errorf("asset %s is embedded but the page does not use it", a)
		}
	}
	external := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|cdn`)
	for ref := range served {
		if !strings.HasPrefix(ref, graphqlapi.Path+"/ui/") {
			t.Errorf("the page references %s, outside the embedded assets", ref)
			continue
		}
		status, h, body := get(ref, "")
		if status != http.StatusOK || body == "" {
			t.Errorf("GET %s: %d, %d bytes", ref, status, len(body))
		}
		if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "text/css") && !strings.HasPrefix(ct, "text/javascript") {
			t.Errorf("GET %s: Content-Type %q", ref, ct)
		}
		if m := external.FindString(body); m != "" {
			t.Errorf("%s references another site: %q", ref, m)
		}
	}
	if m := external.FindString(page); m != "" {
		t.Errorf("the page references another site: %q", m)
	}
	if status, _, _ := get(graphqlapi.Path+"/ui/index.html", ""); status != http.StatusNotFound {
		t.Errorf("the page under /ui/: %d, want 404", status)
	}
	// Not a browser: a GET is refused with a GraphQL error, not the page.
	status, _, body := get(graphqlapi.Path, "application/json")
	if status != http.StatusMethodNotAllowed || !strings.Contains(body, `"code":"invalid_argument"`) {
		t.Errorf("GET without text/html: %d %s", status, body)
	}
}

// TestGraphQLIntrospectionOff checks --graphql-introspection=false:
// __schema and __type are refused with their code, even through a
// fragment, while __typename and queries work; and that introspection is
// on by default.
func TestGraphQLIntrospectionOff(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.GraphQLIntrospection = false
	r := serve(t, cfg)
	c := newGQLClient(t, r.url)
	for _, q := range []string{`{ __schema { types { name } } }`, `{ __type(name: "Job") { name } }`, `query { ...F } fragment F on Query { __schema { queryType { name } } }`} {
		res := c.do(t, "", q, nil)
		if len(res.Errors) == 0 || res.Errors[0].code() != graphqlapi.CodeIntrospectionDisabled || res.Data != nil {
			t.Errorf("%s: %+v %s, want %s", q, res.Errors, res.Data, graphqlapi.CodeIntrospectionDisabled)
		}
	}
	if res := c.do(t, "", `{ __typename queues { name } }`, nil); len(res.Errors) > 0 {
		t.Errorf("__typename with introspection off: %+v", res.Errors)
	}
	// On by default.
	on := newGQLClient(t, serve(t, testConfig(t)).url)
	if res := on.do(t, "", `{ __schema { queryType { name } } }`, nil); len(res.Errors) > 0 || !strings.Contains(string(res.Data["__schema"]), "Query") {
		t.Errorf("introspection on: %+v %s", res.Errors, res.Data)
	}
}

// TestGraphQLOnPostgres checks that GraphQL reads and writes a PostgreSQL
// node's jobs, paging with cursors.
func TestGraphQLOnPostgres(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = pgtest.TestURL(t)
	cfg.DatabaseSchema = pgtest.TestSchema(t, cfg.DatabaseURL)
	st, err := pgstore.Open(t.Context(), cfg.DatabaseURL, pgstore.Options{Schema: cfg.DatabaseSchema, NodeID: "tokens"})
	if err != nil {
		t.Fatal(err)
	}
	tok := makeTokens(t, st)
	st.Close()
	r := serve(t, cfg)
	gqlPaging(t, newGQLClient(t, r.url), tok)
}

// TestGraphQLPaging pages through jobs with cursors on the embedded store.
func TestGraphQLPaging(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	st, err := sqlitestore.Open(cfg.DataDir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tok := makeTokens(t, st)
	st.Close()
	r := serve(t, cfg)
	gqlPaging(t, newGQLClient(t, r.url), tok)
}

// gqlPaging enqueues a batch of five jobs and reads them back two at a
// time, in both orders, following end_cursor, and checks that a producer
// sees only its own jobs.
func gqlPaging(t *testing.T, c *gqlClient, tok tokens) {
	t.Helper()
	in := make([]map[string]any, 5)
	for i := range in {
		in[i] = map[string]any{"kind": "page", "queue": "paging", "args": map[string]any{"i": i}}
	}
	res := c.do(t, tok[auth.ScopeAdmin], `mutation($in: [EnqueueInput!]!) { enqueueBatch(input: $in) { id } }`, map[string]any{"in": in})
	if code := res.code(t); code != "" {
		t.Fatalf("enqueueBatch: %s", code)
	}
	var created []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(res.Data["enqueueBatch"], &created); err != nil || len(created) != 5 {
		t.Fatalf("enqueueBatch answered %s", res.Data["enqueueBatch"])
	}
	var want []string
	for _, j := range created {
		want = append(want, j.ID)
	}
	for _, order := range []string{"asc", "desc"} {
		var got []string
		var after any
		for page := 0; ; page++ {
			if page > 5 {
				t.Fatalf("%s: more pages than jobs", order)
			}
			res := c.do(t, tok[auth.ScopeRead], `query($after: String, $order: ListOrder) {
				jobs(queue: ["paging"], kind: ["page"], state: [available], first: 2, after: $after, order: $order) {
					edges { cursor node { id } } page_info { has_next_page end_cursor } } }`,
				map[string]any{"after": after, "order": order})
			if code := res.code(t); code != "" {
				t.Fatalf("jobs: %s", code)
			}
			var conn struct {
				Edges []struct {
					Cursor string `json:"cursor"`
					Node   struct {
						ID string `json:"id"`
					} `json:"node"`
				} `json:"edges"`
				PageInfo struct {
					HasNextPage bool    `json:"has_next_page"`
					EndCursor   *string `json:"end_cursor"`
				} `json:"page_info"`
			}
			if err := json.Unmarshal(res.Data["jobs"], &conn); err != nil {
				t.Fatal(err)
			}
			for _, e := range conn.Edges {
				got = append(got, e.Node.ID)
			}
			if !conn.PageInfo.HasNextPage {
				if conn.PageInfo.EndCursor != nil {
					t.Errorf("%s: an end cursor on the last page", order)
				}
				break
			}
			after = *conn.PageInfo.EndCursor
		}
		w := slices.Clone(want)
		if order == "desc" {
			slices.Reverse(w)
		}
		if !slices.Equal(got, w) {
			t.Errorf("%s: pages gave %v, want %v", order, got, w)
		}
	}
	res = c.do(t, tok[auth.ScopeRead], `{ jobs(after: "not-a-cursor") { nodes { id } } }`, nil)
	if res.code(t) != "invalid_argument" || res.Errors[0].Extensions[graphqlapi.FieldExtension] != "after" {
		t.Errorf("a bad cursor: %+v", res.Errors)
	}
	// The jobs were enqueued by the admin token: a producer sees none.
	res = c.do(t, tok[auth.ScopeProducer], `{ jobs(queue: ["paging"]) { nodes { id } } job(id: "`+want[0]+`") { id } }`, nil)
	if string(res.Data["jobs"]) != `{"nodes":[]}` || res.code(t) != "not_found" {
		t.Errorf("a producer reads another's jobs: %s %+v", res.Data["jobs"], res.Errors)
	}
}
