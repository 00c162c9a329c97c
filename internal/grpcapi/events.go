package grpcapi

import (
	"context"

	"connectrpc.com/connect"

	"github.com/droverhq/drover/internal/engine"
	droverv1 "github.com/droverhq/drover/internal/gen/drover/v1"
	"github.com/droverhq/drover/internal/gen/drover/v1/droverv1connect"
)

// eventService implements drover.v1.EventService.
type eventService struct{ a *API }

var _ droverv1connect.EventServiceHandler = (*eventService)(nil)

// Subscribe implements droverv1connect.EventServiceHandler: it streams
// the engine's job events (engine.Subscribe) until the client goes away,
// the server stops (UNAVAILABLE) or the subscriber falls behind by more
// than its buffer (RESOURCE_EXHAUSTED, "subscriber too slow: N events
// behind"). A send blocked on a client that does not read holds only
// HTTP/2's flow-control window; the events behind it wait in the bounded
// buffer, and overflow drops the subscriber.
func (s *eventService) Subscribe(ctx context.Context, req *connect.Request[droverv1.SubscribeRequest], stream *connect.ServerStream[droverv1.SubscribeResponse]) error {
	states, err := fromStates(req.Msg.GetState(), "state")
	if err != nil {
		return err
	}
	sub, err := s.a.eng.Subscribe(engine.EventFilter{Queues: req.Msg.GetQueue(), Kinds: req.Msg.GetKind(), States: states})
	if err != nil {
		return err
	}
	defer sub.Close()
	// Headers go out at once, so that a client knows it is subscribed
	// before the first event.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for {
		ev, err := sub.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil // the client went away
			}
			return err
		}
		if err := stream.Send(&droverv1.SubscribeResponse{Event: toEvent(ev)}); err != nil {
			return err
		}
	}
}
