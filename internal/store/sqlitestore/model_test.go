package sqlitestore_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/storetest"
)

// TestModel checks the store against the reference model of
// storetest.RunModel; each check gets a fresh data directory.
func TestModel(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	n := 0
	dir := ""
	storetest.RunModel(t, storetest.ModelFactory{
		Reset: func(context.Context) error {
			if dir != "" {
				if err := os.RemoveAll(dir); err != nil {
					return err
				}
			}
			n++
			dir = filepath.Join(base, strconv.Itoa(n))
			return nil
		},
		Open: func(context.Context) (store.Store, error) {
			return sqlitestore.Open(dir, sqlitestore.Options{NoSync: true})
		},
	}, modelChecks())
}

// modelChecks is 1,000 checks (issue #5), or 100 with -short.
func modelChecks() int {
	if testing.Short() {
		return 100
	}
	return 1000
}
