package sqlitestore_test

import (
	"testing"

	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/storetest"
)

// BenchmarkStore runs the shared store benchmarks on the embedded store
// with its durable default settings (fsync on every commit).
func BenchmarkStore(b *testing.B) { storetest.Bench(b, open) }

// BenchmarkStoreNoSync runs them without fsync, which isolates the CPU
// cost of each operation from the disk's sync latency.
func BenchmarkStoreNoSync(b *testing.B) {
	storetest.Bench(b, func(t testing.TB) store.Store {
		s, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return s
	})
}
