package httpapi_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClientGoneIsNotAnError checks that a long poll its client abandons
// is logged as routine (debug), not as a server error: workers stop their
// long polls all the time, and an ERROR line for each would drown real
// failures.
func TestClientGoneIsNotAnError(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := setupWith(t, config{api: httpapi.Options{Logger: log}})

	ctx, cancel := context.WithCancel(t.Context())
	body := strings.NewReader(`{"queues":["idle"],"wait":"30s"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url+"/v1/lease", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := b.http.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for b.eng.Waiting() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the lease call never started waiting")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	for !strings.Contains(logs.String(), "request ended by its client") {
		if time.Now().After(deadline) {
			t.Fatalf("no debug line for the abandoned long poll; logs:\n%s", logs.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an abandoned long poll was logged as an error:\n%s", logs.String())
	}
}
