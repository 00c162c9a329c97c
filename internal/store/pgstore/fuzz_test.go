package pgstore_test

import (
	"testing"

	"github.com/droverhq/drover/internal/store/storetest"
)

// FuzzRecordRoundTrip checks that the PostgreSQL store's record encodings
// (json args, metadata and output, text[] tags, the jsonb error history)
// round-trip: see storetest.FuzzRoundTrip. One schema serves every input.
func FuzzRecordRoundTrip(f *testing.F) {
	st := open(f)
	f.Cleanup(func() { _ = st.Close() })
	storetest.FuzzRoundTrip(f, st)
}
