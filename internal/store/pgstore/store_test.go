package pgstore_test

import (
	"testing"

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
