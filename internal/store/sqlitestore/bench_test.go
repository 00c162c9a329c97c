package sqlitestore_test

import (
	"testing"

	"github.com/droverhq/drover/internal/store/storetest"
)

// BenchmarkStore runs the shared store benchmarks on the embedded store
// with its durable default settings.
func BenchmarkStore(b *testing.B) { storetest.Bench(b, open) }
