package grpcapi

import (
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonCodec is the JSON codec of the Connect protocol (and of gRPC-JSON),
// set to read and write like REST: fields by their proto names, which
// are REST's names (max_attempts, lease_token, ...), and a field the
// contract does not know refused rather than dropped, so that a typo
// never passes silently. Connect's own codec writes lowerCamelCase; both
// spellings are read. 64-bit integers (ids) are strings in this JSON, as
// the protobuf JSON mapping says.
type jsonCodec struct{ name string }

// jsonCodecs are registered under both names Connect uses for JSON.
var jsonCodecs = []connect.HandlerOption{
	connect.WithCodec(jsonCodec{name: "json"}),
	connect.WithCodec(jsonCodec{name: "json; charset=utf-8"}),
}

// Name implements connect.Codec.
func (c jsonCodec) Name() string { return c.name }

// Marshal implements connect.Codec.
func (jsonCodec) Marshal(msg any) ([]byte, error) {
	m, ok := msg.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a protobuf message", msg)
	}
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
}

// Unmarshal implements connect.Codec.
func (jsonCodec) Unmarshal(data []byte, msg any) error {
	m, ok := msg.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a protobuf message", msg)
	}
	if len(data) == 0 {
		return errors.New("an empty body is not a JSON object: send {}")
	}
	return protojson.Unmarshal(data, m)
}
