package sqlitevfs

import (
	"database/sql"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the database/sql driver
)

// splitHeavyCommits runs transactions that insert rows in random key
// order into an indexed table, so that B-tree pages split (and
// balance_nonroot swaps page numbers) in most commits, and returns how
// many cache truncations walked a whole hash table meanwhile.
func splitHeavyCommits(t *testing.T) int64 {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=cache_size(-32768)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL);
		CREATE INDEX t_k ON t (k)`); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	before := PageCacheFullScans()
	for range 30 {
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for range 200 {
			if _, err := tx.Exec(`INSERT INTO t (id, k, v) VALUES (?, ?, zeroblob(200))`,
				rng.Int64N(1<<40), fmt.Sprintf("%016x", rng.Uint64())); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	return PageCacheFullScans() - before
}

//nolint:paralleltest // the counter and the switch are process-wide
func TestPageCacheFixAvoidsFullScans(t *testing.T) {
	if err := PageCacheFixErr(); err != nil {
		t.Fatalf("page cache correction not installed: %v", err)
	}
	if n := splitHeavyCommits(t); n != 0 {
		t.Errorf("with the correction, %d commits scanned a whole page cache; want 0", n)
	}

	// The same work without the correction shows what it removes.
	pcacheFix.Store(false)
	defer pcacheFix.Store(true)
	n := splitHeavyCommits(t)
	t.Logf("without the correction: %d of 30 commits scanned a whole page cache", n)
	if n < 10 {
		t.Errorf("without the correction, %d commits scanned a whole page cache; want most of 30", n)
	}
}
