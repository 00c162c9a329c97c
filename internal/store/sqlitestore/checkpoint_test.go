package sqlitestore_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// jobsInFileAlone copies drover.db without its WAL, as a checkpoint left
// it, and counts the jobs the copy holds.
func jobsInFileAlone(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, sqlitestore.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.db")
	if err := os.WriteFile(cp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+cp+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM jobs`).Scan(&n); err != nil {
		return 0 // the tables themselves are still only in the WAL
	}
	return n
}

// checkpointedInBackground inserts jobs, one commit each, into a store
// whose writer never checkpoints by itself, and reports whether all of
// them reach the database file while the store stays open.
func checkpointedInBackground(t *testing.T, every time.Duration) bool {
	t.Helper()
	dir := t.TempDir()
	s, err := sqlitestore.Open(dir, sqlitestore.Options{
		CheckpointPages: 1 << 30, // the writer's own checkpoint never runs
		CheckpointEvery: every,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const jobs = 50
	for range jobs {
		sp := job.Spec{Kind: "k"}
		in, err := sp.Prepare(time.Now(), job.Limits{}, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Insert(t.Context(), store.InsertParams{Now: time.Now(), Jobs: []*job.Insert{in}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if jobsInFileAlone(t, dir) == jobs {
			if st := s.Stats(); st.Checkpoints == 0 {
				t.Errorf("the file holds every job but no background checkpoint was counted")
			}
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBackgroundCheckpoints checks that committed pages reach the
// database file without the writer checkpointing them, and that it is
// the background checkpointer that does it.
func TestBackgroundCheckpoints(t *testing.T) {
	t.Parallel()
	if !checkpointedInBackground(t, time.Millisecond) {
		t.Fatal("jobs committed 3 s ago are still only in the WAL")
	}
	if checkpointedInBackground(t, -1) {
		t.Fatal("with background checkpoints off, the jobs reached the database file anyway: the test shows nothing")
	}
}
