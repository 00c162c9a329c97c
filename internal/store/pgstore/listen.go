package pgstore

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// channelName is the NOTIFY channel of the store in schema: one per
// schema, so that two Drover deployments in one database do not wake each
// other, cut to PostgreSQL's 63-byte identifiers.
func channelName(schema string) string {
	name := "drover_jobs"
	if schema != "" && schema != "public" {
		name += "_" + schema
	}
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// Listen calls wake for every notification that jobs became available,
// from any node, until ctx is done: wake(queue, n) means queue gained n
// jobs (n < 0: an unknown number, wake every waiter), and wake("", -1)
// means anything may have changed. Notifications this store's own
// operations sent with its node id are skipped: the engine that made them
// has already woken its waiters.
//
// Listen holds one connection of its own, outside the pool. When the
// connection fails it reconnects with a growing delay (up to 5 s) and
// calls wake("", -1), since notifications sent meanwhile are lost. It
// returns ctx's error.
func (s *Store) Listen(ctx context.Context, wake func(queue string, n int)) error {
	return s.ListenAll(ctx, wake, nil)
}

// ListenAll is Listen that also calls resigned(role) when another node's
// leader resigns role, so that this node's elector can claim it at once.
func (s *Store) ListenAll(ctx context.Context, wake func(queue string, n int), resigned func(role string)) error {
	delay := 100 * time.Millisecond
	first := true
	for {
		began := time.Now()
		err := s.listenOnce(ctx, wake, resigned, !first)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		first = false
		if time.Since(began) > time.Minute {
			delay = 100 * time.Millisecond // it had recovered: start over
		}
		s.log.Warn("PostgreSQL listener lost its connection; reconnecting", "err", err, "in", delay)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func (s *Store) listenOnce(ctx context.Context, wake func(string, int), resigned func(string), again bool) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	if again {
		wake("", -1)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if role, ok := s.parseResigned(n.Payload); ok {
			if resigned != nil {
				resigned(role)
			}
			continue
		}
		queue, count, ok := s.parsePayload(n.Payload)
		if ok {
			wake(queue, count)
		}
	}
}

// parseResigned reads "resigned|node|role" from another node.
func (s *Store) parseResigned(p string) (string, bool) {
	kind, rest, ok := strings.Cut(p, "|")
	if !ok || kind != resignedPayload {
		return "", false
	}
	node, role, ok := strings.Cut(rest, "|")
	if !ok || node == s.nodeID {
		return "", false
	}
	return role, true
}

// parsePayload reads "count|node|queue"; ok is false for the node's own
// notifications and for payloads it cannot read.
func (s *Store) parsePayload(p string) (queue string, n int, ok bool) {
	count, rest, ok1 := strings.Cut(p, "|")
	node, queue, ok2 := strings.Cut(rest, "|")
	if !ok1 || !ok2 || queue == "" || node == s.nodeID {
		return "", 0, false
	}
	n, err := strconv.Atoi(count)
	if err != nil {
		return "", 0, false
	}
	return queue, n, true
}
