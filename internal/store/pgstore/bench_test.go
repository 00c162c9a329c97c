package pgstore_test

import (
	"testing"

	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/storetest"
)

// BenchmarkStore runs the shared store benchmarks on PostgreSQL at the
// server's settings (synchronous_commit as configured, normally on).
func BenchmarkStore(b *testing.B) {
	storetest.Bench(b, func(t testing.TB) store.Store { return open(t) })
}
