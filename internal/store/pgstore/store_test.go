package pgstore_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"

	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/pgstore"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/droverhq/drover/internal/store/storetest"
)

// open opens a store on a fresh schema of the test database.
func open(t testing.TB) *pgstore.Store {
	t.Helper()
	url := pgtest.TestURL(t)
	schema := pgtest.TestSchema(t, url)
	s, err := pgstore.Open(t.Context(), url, pgstore.Options{Schema: schema, MaxConns: 0})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t testing.TB) store.Store { return open(t) })
}

// TestCompleteOneReturnsWholeRow: completing a single job returns the
// whole row (what Get returns), so the engine need not read it again.
func TestCompleteOneReturnsWholeRow(t *testing.T) {
	t.Parallel()
	s := open(t)
	now := time.Now()
	insertJobs(t, s, job.DefaultQueue, 1, now, time.Time{})
	leased, err := s.Lease(t.Context(), store.LeaseParams{Now: now, Queues: []string{job.DefaultQueue}, Limit: 1, LeaseFor: time.Minute, Worker: "w"})
	if err != nil || len(leased) != 1 {
		t.Fatalf("Lease: %v, %v", leased, err)
	}
	res, err := s.Complete(t.Context(), store.CompleteParams{Now: now, Jobs: []store.CompleteJob{{ID: leased[0].ID, LeaseToken: leased[0].LeaseToken, Output: json.RawMessage(`{"ok":true}`)}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("Complete: %v, %v", err, res)
	}
	got, err := s.Get(t.Context(), leased[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res[0].Job, got) {
		t.Fatalf("Complete returned\n%+v\nGet returns\n%+v", res[0].Job, got)
	}
}
