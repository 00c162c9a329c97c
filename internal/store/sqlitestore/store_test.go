package sqlitestore_test

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
	"github.com/droverhq/drover/internal/store/sqlitestore"
	"github.com/droverhq/drover/internal/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t testing.TB) store.Store {
	s, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, open)
}

// TestCleanCloseLeavesSelfContainedFile checks that after Close the
// database file alone holds every job: the WAL was folded in, so copying
// drover.db (a backup while stopped) loses nothing.
func TestCleanCloseLeavesSelfContainedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	sp := job.Spec{Kind: "k"}
	in, err := sp.Prepare(time.Now(), job.Limits{}, "")
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Insert(t.Context(), store.InsertParams{Now: time.Now(), Jobs: []*job.Insert{in}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, sqlitestore.DBFile+"-wal")); err == nil && fi.Size() > 0 {
		t.Fatalf("WAL still holds %d bytes after a clean close", fi.Size())
	}
	copyDir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(dir, sqlitestore.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(copyDir, sqlitestore.DBFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := sqlitestore.Open(copyDir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Get(t.Context(), res[0].Job.ID); err != nil {
		t.Fatalf("job missing from a copy of drover.db alone: %v", err)
	}
}

// TestSecondOpenIsRefused checks that one process (here, one Store) owns
// a data directory.
func TestSecondOpenIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := sqlitestore.Open(dir, sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := sqlitestore.Open(dir, sqlitestore.Options{}); !errors.Is(err, sqlitestore.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
}

// TestGroupCommitSharesTransactions checks that concurrent writers share
// commits (and so fsyncs) instead of taking one each.
func TestGroupCommitSharesTransactions(t *testing.T) {
	t.Parallel()
	s, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const writers, each = 50, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				sp := job.Spec{Kind: "k"}
				in, err := sp.Prepare(time.Now(), job.Limits{}, "")
				if err != nil {
					errs <- err
					return
				}
				if _, err := s.Insert(t.Context(), store.InsertParams{Now: time.Now(), Jobs: []*job.Insert{in}}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Requests != writers*each {
		t.Fatalf("%d requests counted, want %d", st.Requests, writers*each)
	}
	// Each commit fsyncs, so while one syncs the other writers queue up.
	if st.Commits*2 > st.Requests {
		t.Fatalf("%d commits for %d requests: writers did not share commits", st.Commits, st.Requests)
	}
	t.Logf("%d requests in %d commits (%.1f per commit)", st.Requests, st.Commits, float64(st.Requests)/float64(st.Commits))
}

// TestDataDirWithURICharacters checks that a directory name with "#", "?"
// or "%" opens that directory, not a shortened path that another store
// could share.
func TestDataDirWithURICharacters(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	dirs := []string{filepath.Join(base, "a#1"), filepath.Join(base, "a#2"), filepath.Join(base, "b?x=1"), filepath.Join(base, "c%20d")}
	for _, dir := range dirs {
		s, err := sqlitestore.Open(dir, sqlitestore.Options{NoSync: true})
		if err != nil {
			t.Fatalf("Open(%q): %v", dir, err)
		}
		sp := job.Spec{Kind: "k"}
		in, _ := sp.Prepare(time.Now(), job.Limits{}, "")
		if _, err := s.Insert(t.Context(), store.InsertParams{Now: time.Now(), Jobs: []*job.Insert{in}}); err != nil {
			t.Fatal(err)
		}
		qs, err := s.Queues(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n := qs[0].Counts[job.StateAvailable]; n != 1 {
			t.Fatalf("store in %q holds %d jobs, want its own 1 (it shares a file with another)", dir, n)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, sqlitestore.DBFile)); err != nil {
			t.Fatalf("no database file inside %q: %v", dir, err)
		}
	}
	entries, _ := os.ReadDir(base)
	if len(entries) != len(dirs) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("base holds %v, want only the %d data directories", names, len(dirs))
	}
}
