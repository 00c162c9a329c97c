package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/droverhq/drover/internal/config"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
	"github.com/droverhq/drover/internal/grpcapi"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
)

// TestGRPCIdempotency checks the idempotency-key of JobService.Enqueue
// and EnqueueBatch on the embedded store.
func TestGRPCIdempotency(t *testing.T) {
	t.Parallel()
	testGRPCIdempotency(t, testConfig(t))
}

// TestGRPCIdempotencyPostgres is TestGRPCIdempotency on a PostgreSQL node.
func TestGRPCIdempotencyPostgres(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.DatabaseURL = pgtest.TestURL(t)
	cfg.DatabaseSchema = pgtest.TestSchema(t, cfg.DatabaseURL)
	testGRPCIdempotency(t, cfg)
}

// idemClients are the clients of one server: grpc-go (the reference gRPC
// client), Connect's client speaking gRPC, and Connect's client speaking
// the Connect protocol with JSON.
type idemClients struct {
	r       *running
	conn    *grpc.ClientConn
	grpc    droverv1connect.JobServiceClient
	json    droverv1connect.JobServiceClient
	httpCli *http.Client
}

func newIdemClients(t *testing.T, r *running) *idemClients {
	t.Helper()
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{Protocols: p}
	t.Cleanup(h2c.CloseIdleConnections)
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	return &idemClients{
		r:       r,
		conn:    grpcGoConn(t, r.url),
		grpc:    droverv1connect.NewJobServiceClient(&http.Client{Transport: h2c}, r.url, connect.WithGRPC()),
		json:    droverv1connect.NewJobServiceClient(&http.Client{Transport: h1}, r.url, connect.WithProtoJSON()),
		httpCli: &http.Client{Transport: h1, Timeout: 30 * time.Second},
	}
}

// count returns how many jobs queue q holds.
func (c *idemClients) count(t *testing.T, q string) int {
	t.Helper()
	res, err := c.r.srv.Engine().List(t.Context(), store.ListParams{Queues: []string{q}, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Jobs)
}

// invoke calls a JobService procedure through grpc-go with the given
// idempotency-key values (none when keys is empty).
func (c *idemClients) invoke(ctx context.Context, procedure string, in, out proto.Message, keys ...string) error {
	for _, k := range keys {
		ctx = metadata.AppendToOutgoingContext(ctx, grpcapi.IdempotencyKeyHeader, k)
	}
	return c.conn.Invoke(ctx, procedure, in, out)
}

func withKey[T any](msg *T, keys ...string) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for _, k := range keys {
		req.Header().Add(grpcapi.IdempotencyKeyHeader, k)
	}
	return req
}

func enqueueReq(t *testing.T, q string, args map[string]any) *droverv1.EnqueueRequest {
	t.Helper()
	v, err := structpb.NewValue(args)
	if err != nil {
		t.Fatal(err)
	}
	return &droverv1.EnqueueRequest{Kind: "email.send", Queue: q, Args: v, Tags: []string{"a", "b"}}
}

func deterministic(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantStable checks that err is a refusal with the gRPC code want and the
// stable code code (in the drover-code metadata and the ErrorInfo detail),
// and returns the field its BadRequest detail names, if any.
func wantStable(t *testing.T, what string, err error, want connect.Code, code string) string {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Fatalf("%s: %v, want code %s", what, err, want)
	}
	if ce.Code() != want || ce.Meta().Get(grpcapi.CodeHeader) != code {
		t.Fatalf("%s: %v (%s: %q), want %s with %s", what, err, grpcapi.CodeHeader, ce.Meta().Get(grpcapi.CodeHeader), want, code)
	}
	field := ""
	for _, d := range ce.Details() {
		v, err := d.Value()
		if err != nil {
			continue
		}
		switch v := v.(type) {
		case *errdetails.ErrorInfo:
			if v.GetReason() != code {
				t.Errorf("%s: ErrorInfo reason %q, want %q", what, v.GetReason(), code)
			}
		case *errdetails.BadRequest:
			if len(v.GetFieldViolations()) > 0 {
				field = v.GetFieldViolations()[0].GetField()
			}
		}
	}
	return field
}

func testGRPCIdempotency(t *testing.T, cfg config.Config) {
	t.Helper()
	r := serve(t, cfg)
	c := newIdemClients(t, r)

	t.Run("replay", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		q := "idem-replay"
		in := enqueueReq(t, q, map[string]any{"to": "bob@example.com", "order": 7731})
		var first, again droverv1.EnqueueResponse
		if err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, in, &first, "order-7731"); err != nil {
			t.Fatalf("first Enqueue: %v", err)
		}
		if err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, in, &again, "order-7731"); err != nil {
			t.Fatalf("repeated Enqueue: %v", err)
		}
		if first.GetJob().GetId() == 0 || !bytes.Equal(deterministic(t, &first), deterministic(t, &again)) {
			t.Errorf("the repeat answered\n%v\nwant the first response\n%v", &again, &first)
		}
		// The same request over the Connect protocol in JSON, with the
		// args' keys in another order: the same request, the same answer.
		res, err := c.json.Enqueue(ctx, withKey(enqueueReq(t, q, map[string]any{"order": 7731, "to": "bob@example.com"}), "order-7731"))
		if err != nil {
			t.Fatalf("repeat over Connect JSON: %v", err)
		}
		if !bytes.Equal(deterministic(t, res.Msg), deterministic(t, &first)) {
			t.Errorf("the repeat over Connect JSON answered\n%v\nwant\n%v", res.Msg, &first)
		}
		if n := c.count(t, q); n != 1 {
			t.Fatalf("%d jobs after three calls with one key, want 1", n)
		}
		// Without a key, the same request enqueues again: the key, not
		// the request, made the calls one.
		if err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, in, &again); err != nil {
			t.Fatal(err)
		}
		if n := c.count(t, q); n != 2 {
			t.Fatalf("%d jobs after an enqueue without a key, want 2", n)
		}
	})

	t.Run("mismatch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		q := "idem-mismatch"
		if _, err := c.grpc.Enqueue(ctx, withKey(enqueueReq(t, q, map[string]any{"n": 1}), "k-mismatch")); err != nil {
			t.Fatal(err)
		}
		_, err := c.grpc.Enqueue(ctx, withKey(enqueueReq(t, q, map[string]any{"n": 2}), "k-mismatch"))
		wantStable(t, "another request with the key", err, connect.CodeInvalidArgument, "idempotency_mismatch")
		// The same message to the other procedure is another request.
		_, err = c.grpc.EnqueueBatch(ctx, withKey(&droverv1.EnqueueBatchRequest{Jobs: []*droverv1.EnqueueRequest{enqueueReq(t, q, map[string]any{"n": 1})}}, "k-mismatch"))
		wantStable(t, "the key on EnqueueBatch", err, connect.CodeInvalidArgument, "idempotency_mismatch")
		if n := c.count(t, q); n != 1 {
			t.Fatalf("%d jobs after refused mismatches, want 1", n)
		}
	})

	t.Run("across faces", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		q := "idem-faces"
		body := fmt.Sprintf(`{"kind":"email.send","queue":%q,"args":{"n":1}}`, q)
		// First over gRPC, then the same job over REST with the key.
		if _, err := c.grpc.Enqueue(ctx, withKey(enqueueReq(t, q, map[string]any{"n": 1}), "k-grpc-first")); err != nil {
			t.Fatal(err)
		}
		if st, text := c.rest(t, "k-grpc-first", body); st != http.StatusUnprocessableEntity || !strings.Contains(text, "idempotency_mismatch") {
			t.Errorf("REST with a key first used over gRPC: %d %s; want 422 idempotency_mismatch", st, text)
		}
		// First over REST, then over gRPC.
		if st, text := c.rest(t, "k-rest-first", body); st != http.StatusCreated {
			t.Fatalf("REST enqueue: %d %s", st, text)
		}
		_, err := c.grpc.Enqueue(ctx, withKey(enqueueReq(t, q, map[string]any{"n": 1}), "k-rest-first"))
		wantStable(t, "gRPC with a key first used over REST", err, connect.CodeInvalidArgument, "idempotency_mismatch")
		if n := c.count(t, q); n != 2 {
			t.Fatalf("%d jobs, want 2 (one per face's first call)", n)
		}
	})

	t.Run("batch", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		q := "idem-batch"
		batch := func(n int) *droverv1.EnqueueBatchRequest {
			b := &droverv1.EnqueueBatchRequest{}
			for i := range n {
				b.Jobs = append(b.Jobs, enqueueReq(t, q, map[string]any{"i": i}))
			}
			return b
		}
		first, err := c.grpc.EnqueueBatch(ctx, withKey(batch(3), "k-batch"))
		if err != nil {
			t.Fatal(err)
		}
		again, err := c.grpc.EnqueueBatch(ctx, withKey(batch(3), "k-batch"))
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Msg.GetJobs()) != 3 || !bytes.Equal(deterministic(t, first.Msg), deterministic(t, again.Msg)) {
			t.Errorf("the repeated batch answered\n%v\nwant\n%v", again.Msg, first.Msg)
		}
		if n := c.count(t, q); n != 3 {
			t.Fatalf("%d jobs after a batch of 3 sent twice with one key, want 3", n)
		}

		// All or nothing: a batch refused with a key enqueues none of its
		// jobs and does not use the key up.
		bad := batch(2)
		bad.Jobs[1].Priority = 42
		_, err = c.grpc.EnqueueBatch(ctx, withKey(bad, "k-batch-2"))
		if f := wantStable(t, "a batch with an invalid job", err, connect.CodeInvalidArgument, "invalid_argument"); f != "jobs[1].priority" {
			t.Errorf("the refusal names field %q, want jobs[1].priority", f)
		}
		missing := batch(2)
		missing.Jobs[1].DependsOn = []int64{1 << 40}
		if _, err := c.grpc.EnqueueBatch(ctx, withKey(missing, "k-batch-2")); err == nil {
			t.Fatal("a batch whose second job depends on a missing job was taken")
		}
		if n := c.count(t, q); n != 3 {
			t.Fatalf("%d jobs after refused batches, want 3: a refused batch enqueued some of its jobs", n)
		}
		ok, err := c.grpc.EnqueueBatch(ctx, withKey(batch(2), "k-batch-2"))
		if err != nil || len(ok.Msg.GetJobs()) != 2 {
			t.Fatalf("a valid batch with the key of refused ones: %v; want it taken", err)
		}
		if n := c.count(t, q); n != 5 {
			t.Fatalf("%d jobs, want 5", n)
		}
	})

	t.Run("invalid keys", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		q := "idem-invalid"
		in := enqueueReq(t, q, map[string]any{"n": 1})
		for name, keys := range map[string][]string{
			"empty":      {""},
			"too long":   {strings.Repeat("k", 256)},
			"a space":    {"order 7731"},
			"two values": {"a", "b"},
		} {
			err := c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, in, &droverv1.EnqueueResponse{}, keys...)
			if status.Code(err) != codes.InvalidArgument {
				t.Errorf("key %s over grpc-go: %v, want INVALID_ARGUMENT", name, err)
			}
			_, err = c.grpc.Enqueue(ctx, withKey(in, keys...))
			if f := wantStable(t, "key "+name, err, connect.CodeInvalidArgument, "invalid_argument"); f != grpcapi.IdempotencyKeyHeader {
				t.Errorf("key %s: the refusal names field %q, want %s", name, f, grpcapi.IdempotencyKeyHeader)
			}
		}
		// Not ASCII, over HTTP/1.1 (HTTP/2 clients refuse to send it).
		_, err := c.json.Enqueue(ctx, withKey(in, "clé"))
		wantStable(t, "a key that is not ASCII", err, connect.CodeInvalidArgument, "invalid_argument")
		// The longest valid key works.
		if _, err := c.grpc.Enqueue(ctx, withKey(in, strings.Repeat("k", 255))); err != nil {
			t.Errorf("a key of 255 characters: %v", err)
		}
		if n := c.count(t, q); n != 1 {
			t.Fatalf("%d jobs, want 1 (only the valid key's)", n)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		q := "idem-concurrent"
		const n = 16
		ids := make([]int64, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				var res droverv1.EnqueueResponse
				errs[i] = c.invoke(ctx, droverv1connect.JobServiceEnqueueProcedure, enqueueReq(t, q, map[string]any{"n": 1}), &res, "k-concurrent")
				ids[i] = res.GetJob().GetId()
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || ids[i] != ids[0] || ids[i] == 0 {
				t.Errorf("call %d: id %d, %v; want job %d like call 0", i, ids[i], errs[i], ids[0])
			}
		}
		if got := c.count(t, q); got != 1 {
			t.Fatalf("%d jobs after %d concurrent calls with one key, want 1", got, n)
		}
	})
}

// rest enqueues body over REST with an Idempotency-Key, and returns the
// status and the body of the answer.
func (c *idemClients) rest(t *testing.T, key, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, c.r.url+"/v1/jobs", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := c.httpCli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b.String()
}
