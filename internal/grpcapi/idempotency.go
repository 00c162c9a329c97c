package grpcapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// IdempotencyKeyHeader is the request metadata key (a gRPC metadata entry,
// a Connect header) that makes JobService.Enqueue and EnqueueBatch safe to
// retry, with REST's Idempotency-Key contract: the same key and the same
// request within 24 hours returns the first response, byte for byte, and
// enqueues nothing; the same key with another request is refused with
// INVALID_ARGUMENT and the stable code idempotency_mismatch. A key is 1
// to 255 characters of printable ASCII without spaces
// (engine.CheckIdempotencyKey), sent once.
//
// Keys share one space with REST's (per token when tokens are in use),
// and a request's identity includes the face: a key first used over REST
// and then over gRPC, or the reverse, is refused as a mismatch, never
// answered with the other face's response and never enqueued twice.
const IdempotencyKeyHeader = "idempotency-key"

// idempotencyKey returns the call's idempotency key, "" when it sent none.
func idempotencyKey(h http.Header) (string, error) {
	vals := h.Values(IdempotencyKeyHeader)
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", &job.ValidationError{Field: IdempotencyKeyHeader, Message: fmt.Sprintf("must be sent once, got %d values", len(vals))}
	}
	if err := engine.CheckIdempotencyKey(vals[0]); err != nil {
		var ve *job.ValidationError
		if errors.As(err, &ve) {
			return "", &job.ValidationError{Field: IdempotencyKeyHeader, Message: ve.Message}
		}
		return "", err
	}
	return vals[0], nil
}

// requestHash is the identity of an idempotent call: a SHA-256 of the
// face, the procedure and the request message in its canonical form, the
// protobuf JSON mapping (proto field names) re-encoded with object keys
// sorted and no white space (job.CanonicalJSON). The hash depends on what
// the request says, never on how it was sent: the same message over gRPC
// (binary, any field order) and over Connect's JSON hashes the same.
// protojson's output is not stable byte for byte across library versions
// (it varies white space on purpose), which the canonical re-encoding
// removes. The face's prefix ("grpc") keeps the hash apart from REST's,
// whose identity is its JSON body.
func requestHash(procedure string, msg proto.Message) (string, error) {
	raw, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
	if err != nil {
		return "", fmt.Errorf("encode request: %w", err)
	}
	canon, err := job.CanonicalJSON(raw)
	if err != nil {
		return "", fmt.Errorf("canonicalize request: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("grpc\x00" + procedure + "\x00"))
	h.Write(canon)
	return hex.EncodeToString(h.Sum(nil)), nil
}

// storedResponse marshals a response for the idempotency record. It is
// marshalled deterministically, and every call answers with the message
// decoded from these bytes, the first as well as its repeats, so that a
// repeat gets exactly the first call's response.
func storedResponse(m proto.Message) (store.StoredResponse, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return store.StoredResponse{}, fmt.Errorf("encode response: %w", err)
	}
	// The status is REST's notion; a gRPC record is never answered over
	// REST (its request hash differs), but it is a valid one.
	return store.StoredResponse{Status: http.StatusOK, Body: b}, nil
}

// enqueue runs the engine's Enqueue for req with the caller recorded as
// the jobs' creator, as REST does, at most once per idempotency key when
// the call carries one. render makes the response from the insert's
// results; with a key, the response is stored with the key and decoded
// into out, which is what the call answers (on a repeat, from the first
// call's stored bytes).
func (s *jobService) enqueue(ctx context.Context, req connect.AnyRequest, specs []job.Spec, render func([]store.InsertResult) proto.Message, out proto.Message) (proto.Message, error) {
	key, err := idempotencyKey(req.Header())
	if err != nil {
		return nil, err
	}
	if who, ok := auth.PrincipalFrom(ctx); ok {
		for i := range specs {
			specs[i].CreatedBy = who.Name()
		}
		// Each token has its own key space, REST's: the same key from
		// another token is another request.
		if key != "" {
			key = who.Name() + "/" + key
		}
	}
	if key == "" {
		res, err := s.a.eng.Enqueue(ctx, specs...)
		if err != nil {
			return nil, err
		}
		return render(res), nil
	}
	hash, err := requestHash(req.Spec().Procedure, req.Any().(proto.Message)) //nolint:forcetypeassert // every request of the face is a protobuf message
	if err != nil {
		return nil, err
	}
	res, err := s.a.eng.EnqueueIdempotent(ctx, key, hash, func(res []store.InsertResult) (store.StoredResponse, error) {
		return storedResponse(render(res))
	}, specs...)
	if err != nil {
		return nil, err
	}
	if err := proto.Unmarshal(res.Response.Body, out); err != nil {
		return nil, fmt.Errorf("decode stored response: %w", err)
	}
	return out, nil
}
