package sqlitevfs_test

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sqlite "modernc.org/sqlite"

	"github.com/droverhq/drover/internal/store/sqlitestore/sqlitevfs"
)

// openDB opens path through v with the store's durable settings.
func openDB(t *testing.T, v *sqlitevfs.VFS, path string) *sql.DB {
	t.Helper()
	q := url.Values{}
	q.Set("vfs", v.Name())
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "busy_timeout(10000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func newVFS(t *testing.T, faults *sqlitevfs.Faults) *sqlitevfs.VFS {
	t.Helper()
	v, err := sqlitevfs.New(sqlitevfs.Options{Faults: faults})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("close VFS: %v", err)
		}
	})
	return v
}

func mustExec(t *testing.T, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// fill makes a sealed database at path with rows rows of about 200 bytes,
// and closes it (which checkpoints the WAL into the file).
func fill(t *testing.T, v *sqlitevfs.VFS, path string, rows int) {
	t.Helper()
	if err := sqlitevfs.CreateDatabase(path); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	for i := range rows {
		mustExec(t, db, "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint(i%10), 200))
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return -1
}

// TestCreatedDatabaseIsSealed checks that a database made by
// CreateDatabase is a valid SQLite file that reserves 8 bytes per page,
// that every page written through the VFS carries its seal, and that
// Verify accepts it.
func TestCreatedDatabaseIsSealed(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	path := filepath.Join(t.TempDir(), "db")
	fill(t, v, path, 300)
	if err := sqlitevfs.CreateDatabase(path); err == nil {
		t.Fatal("CreateDatabase over an existing file succeeded")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data)%sqlitevfs.PageSize != 0 || len(data) < 10*sqlitevfs.PageSize {
		t.Fatalf("file is %d bytes: want many whole pages", len(data))
	}
	if data[20] != sqlitevfs.ReservedBytes {
		t.Fatalf("header reserves %d bytes per page", data[20])
	}
	if seal, err := sqlitevfs.Verify(path); err != nil || seal != sqlitevfs.Sealed {
		t.Fatalf("Verify = %v, %v; want sealed and no error", seal, err)
	}
	db := openDB(t, v, path)
	defer db.Close()
	var check string
	if err := db.QueryRowContext(t.Context(), "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 300 {
		t.Fatalf("count = %d, %v; want 300", n, err)
	}
}

// TestUnsealedDatabasePassesThrough checks that a database SQLite made
// itself (no reserved bytes, as before checksums) works through the VFS
// and that Verify reports it unsealed, not corrupt.
func TestUnsealedDatabasePassesThrough(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	path := filepath.Join(t.TempDir(), "db")
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t (v TEXT)")
	mustExec(t, db, "INSERT INTO t VALUES ('x')")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if seal, err := sqlitevfs.Verify(path); err != nil || seal != sqlitevfs.Unsealed {
		t.Fatalf("Verify = %v, %v; want unsealed and no error", seal, err)
	}
	db = openDB(t, v, path)
	defer db.Close()
	var s string
	if err := db.QueryRowContext(t.Context(), "SELECT v FROM t").Scan(&s); err != nil || s != "x" {
		t.Fatalf("read back %q, %v", s, err)
	}
}

// TestFlippedBitFailsTheRead checks that a page changed on disk while the
// database is closed is refused when SQLite reads it (SQLITE_IOERR_DATA),
// not served, and that the VFS names the page.
func TestFlippedBitFailsTheRead(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	path := filepath.Join(t.TempDir(), "db")
	fill(t, v, path, 300)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A byte of row data on the last page: a table leaf that the count
	// below must read.
	last := len(data)/sqlitevfs.PageSize - 1
	off := last*sqlitevfs.PageSize + sqlitevfs.PageSize - 100
	data[off] ^= 0x10
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var ce *sqlitevfs.CorruptError
	if _, err := sqlitevfs.Verify(path); !errors.As(err, &ce) || int(ce.Page) != last+1 {
		t.Fatalf("Verify = %v, want a *CorruptError for page %d", err, last+1)
	}
	db := openDB(t, v, path)
	defer db.Close()
	var sum int
	err = db.QueryRowContext(t.Context(), "SELECT sum(length(v)) FROM t").Scan(&sum)
	if err == nil {
		t.Fatalf("read a corrupt page without error (sum %d)", sum)
	}
	const ioerrData = 10 | 32<<8
	if code := sqliteCode(err); code != ioerrData {
		t.Fatalf("read error %v (code %d), want SQLITE_IOERR_DATA", err, code)
	}
	if c := v.Corruption(); c == nil || int(c.Page) != last+1 {
		t.Fatalf("Corruption() = %v, want page %d", c, last+1)
	}
}

// TestFailedSyncIsReported checks that the n-th fsync fails with
// SQLITE_IOERR_FSYNC, the commit that needed it fails, and the VFS
// remembers the failure.
func TestFailedSyncIsReported(t *testing.T) {
	t.Parallel()
	faults, v, _, db := newFaultyDB(t)
	defer db.Close()
	mustExec(t, db, "CREATE TABLE t (v INTEGER)")
	if v.SyncErr() != nil {
		t.Fatalf("SyncErr before any fault: %v", v.SyncErr())
	}
	faults.FailSync(1)
	_, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES (1)")
	const ioerrFsync = 10 | 4<<8
	if code := sqliteCode(err); code != ioerrFsync {
		t.Fatalf("commit over a failing fsync: %v (code %d), want SQLITE_IOERR_FSYNC", err, code)
	}
	var se *sqlitevfs.SyncError
	if !errors.As(v.SyncErr(), &se) || !strings.HasSuffix(se.Path, "db-wal") {
		t.Fatalf("SyncErr() = %v, want the WAL's failed fsync", v.SyncErr())
	}
}

// TestSpaceBudget checks that writes past the budget fail with
// SQLITE_FULL, that nothing of the failed transaction is visible, and that
// writing works again once space returns.
func TestSpaceBudget(t *testing.T) {
	t.Parallel()
	faults, v, _, db := newFaultyDB(t)
	defer db.Close()
	mustExec(t, db, "CREATE TABLE t (v TEXT)")
	faults.SetSpace(1000)
	_, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES (?)", strings.Repeat("x", 20000))
	const full = 13
	if code := sqliteCode(err); code != full {
		t.Fatalf("insert past the budget: %v (code %d), want SQLITE_FULL", err, code)
	}
	if faults.FullWrites() == 0 {
		t.Fatal("no write was refused for space")
	}
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 0 {
		t.Fatalf("after the failed insert: count %d, %v; want 0", n, err)
	}
	faults.SetSpace(-1)
	mustExec(t, db, "INSERT INTO t VALUES (?)", strings.Repeat("x", 20000))
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after space returned: count %d, %v; want 1", n, err)
	}
	if v.SyncErr() != nil {
		t.Fatalf("a full disk counted as a failed fsync: %v", v.SyncErr())
	}
}

// TestPowerLossDropsUnsyncedWrites checks the disk model directly: after
// a power loss a file holds what it held at its last successful fsync,
// in DropUnsynced mode, and under TearUnsynced each block is either its
// synced or its newest content.
func TestPowerLossDropsUnsyncedWrites(t *testing.T) {
	t.Parallel()
	for _, mode := range []sqlitevfs.LossMode{sqlitevfs.DropUnsynced, sqlitevfs.TearUnsynced} {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			t.Parallel()
			faults := sqlitevfs.NewFaults()
			v := newVFS(t, faults)
			path := filepath.Join(t.TempDir(), "db")
			if err := sqlitevfs.CreateDatabase(path); err != nil {
				t.Fatal(err)
			}
			db := openDB(t, v, path)
			mustExec(t, db, "CREATE TABLE t (v TEXT)")
			mustExec(t, db, "INSERT INTO t VALUES ('synced')")
			synced, err := os.ReadFile(path + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			// The next commit's fsync fails: its frames are in the file
			// but not durable.
			faults.FailSync(1)
			if _, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES (?)", strings.Repeat("u", 9000)); err == nil {
				t.Fatal("commit succeeded over a failed fsync")
			}
			newest, err := os.ReadFile(path + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			if len(newest) <= len(synced) {
				t.Fatalf("the failed commit wrote nothing to the WAL (%d -> %d bytes)", len(synced), len(newest))
			}
			faults.CutPower()
			db.Close()
			if err := faults.PowerLoss(mode, rand.New(rand.NewPCG(1, 2))); err != nil {
				t.Fatal(err)
			}
			after, err := os.ReadFile(path + "-wal")
			if err != nil {
				t.Fatal(err)
			}
			switch mode {
			case sqlitevfs.DropUnsynced:
				if !bytes.Equal(after, synced) {
					t.Fatalf("WAL after the power loss is %d bytes and differs from its %d synced bytes", len(after), len(synced))
				}
			case sqlitevfs.TearUnsynced:
				if len(after) != len(synced) && len(after) != len(newest) {
					t.Fatalf("WAL after a torn power loss is %d bytes, want %d or %d", len(after), len(synced), len(newest))
				}
				for b := 0; b*sqlitevfs.BlockSize < len(synced); b++ {
					lo, hi := b*sqlitevfs.BlockSize, min((b+1)*sqlitevfs.BlockSize, len(synced))
					if !bytes.Equal(after[lo:hi], synced[lo:hi]) && !bytes.Equal(after[lo:hi], newest[lo:hi]) {
						t.Fatalf("block %d is neither its synced nor its newest content", b)
					}
				}
			}
			// Whatever was lost, SQLite recovers the committed row.
			db = openDB(t, v, path)
			defer db.Close()
			var got string
			if err := db.QueryRowContext(t.Context(), "SELECT v FROM t ORDER BY rowid LIMIT 1").Scan(&got); err != nil || got != "synced" {
				t.Fatalf("after the power loss: %q, %v; want the synced row", got, err)
			}
		})
	}
}

// TestPowerCutRefusesIO checks that once the power is cut nothing more is
// written and a database cannot be opened.
func TestPowerCutRefusesIO(t *testing.T) {
	t.Parallel()
	faults := sqlitevfs.NewFaults()
	v := newVFS(t, faults)
	path := filepath.Join(t.TempDir(), "db")
	if err := sqlitevfs.CreateDatabase(path); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, v, path)
	mustExec(t, db, "CREATE TABLE t (v TEXT)")
	faults.CutPower()
	written := faults.Written()
	if _, err := db.ExecContext(t.Context(), "INSERT INTO t VALUES ('x')"); err == nil {
		t.Fatal("insert succeeded with the power cut")
	}
	if faults.Written() != written {
		t.Fatal("bytes were written with the power cut")
	}
	db.Close()
	if err := faults.PowerLoss(sqlitevfs.DropUnsynced, nil); err != nil {
		t.Fatal(err)
	}
	if err := faults.PowerLoss(sqlitevfs.DropUnsynced, nil); err == nil {
		t.Fatal("PowerLoss without CutPower succeeded")
	}
}

// liveDB makes a sealed database whose newest pages are only in its WAL:
// automatic checkpoints are off, the page cache is small (so that a large
// transaction spills pages into the WAL and rewrites them there), and the
// connection stays open. It returns the database and how many rows it
// committed.
func liveDB(t *testing.T, v *sqlitevfs.VFS, path string) (*sql.DB, int) {
	t.Helper()
	if err := sqlitevfs.CreateDatabase(path); err != nil {
		t.Fatal(err)
	}
	q := url.Values{}
	q.Set("vfs", v.Name())
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "wal_autocheckpoint(0)")
	q.Add("_pragma", "cache_size(-64)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	mustExec(t, db, "CREATE INDEX t_v ON t (v)")
	rows := 0
	for i := range 20 {
		mustExec(t, db, "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint(i), 300))
		rows++
	}
	// One transaction larger than the cache: pages spill into the WAL
	// and are rewritten in place before the commit.
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 400 {
		if _, err := tx.ExecContext(t.Context(), "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint(i%7), 300)); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(t.Context(), "UPDATE t SET v = v || 'x' WHERE id = ?", 1+i%20); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows += 400
	return db, rows
}

// TestWALFramesStaySound checks that the WAL frames the VFS rewrites (to
// seal their pages) still form a chain that SQLite itself accepts: a copy
// of the files taken while the database is open, as a crash leaves them,
// opens with SQLite's own VFS with every committed row, and checkpoints
// into a file whose every page is sealed.
func TestWALFramesStaySound(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	dir := t.TempDir()
	path := filepath.Join(dir, "db")
	db, rows := liveDB(t, v, path)
	defer db.Close()
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no WAL to check: %v", err)
	}
	crash, plain := crashCopy(t, path)
	var n int
	if err := plain.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != rows {
		t.Fatalf("SQLite's own VFS recovered %d rows (%v), want %d: the WAL chain is broken", n, err, rows)
	}
	var busy, logPages, done int
	if err := plain.QueryRowContext(t.Context(), "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logPages, &done); err != nil || busy != 0 {
		t.Fatalf("checkpoint: %v (busy %d)", err, busy)
	}
	if err := plain.Close(); err != nil {
		t.Fatal(err)
	}
	// The checkpoint above ran through SQLite's own VFS, which seals
	// nothing: every page it copied was sealed in the WAL.
	if seal, err := sqlitevfs.Verify(crash); err != nil || seal != sqlitevfs.Sealed {
		t.Fatalf("Verify of the checkpointed copy = %v, %v; want sealed", seal, err)
	}
}

// TestLiveBackupIsSealed copies an open database with SQLite's online
// backup (what sqlite3's .backup does), which takes the newest pages from
// the WAL: the copy must pass Verify.
func TestLiveBackupIsSealed(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	path := filepath.Join(t.TempDir(), "db")
	db, rows := liveDB(t, v, path)
	defer db.Close()
	dest := filepath.Join(t.TempDir(), "backup.db")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = conn.Raw(func(dc any) error {
		bc, ok := dc.(interface {
			NewBackup(string) (*sqlite.Backup, error)
		})
		if !ok {
			return errors.New("the driver offers no backup")
		}
		b, err := bc.NewBackup("file:" + dest)
		if err != nil {
			return err
		}
		if _, err := b.Step(-1); err != nil {
			return errors.Join(err, b.Finish())
		}
		return b.Finish()
	})
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	if seal, err := sqlitevfs.Verify(dest); err != nil || seal != sqlitevfs.Sealed {
		t.Fatalf("Verify of a live backup = %v, %v; want sealed", seal, err)
	}
	copyDB := openDB(t, v, dest)
	defer copyDB.Close()
	var n int
	if err := copyDB.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != rows {
		t.Fatalf("backup holds %d rows (%v), want %d", n, err, rows)
	}
}

// TestVacuumIntoCopies checks the two ways a VACUUM INTO copy of a sealed
// database is made. Through the VFS (the copy's pages come before its
// page 1) the copy is sealed. Through SQLite's own VFS, as the sqlite3
// shell makes it, the pages have blank reserved bytes: Verify says Blank,
// and Reseal makes the copy Sealed and readable through the VFS.
func TestVacuumIntoCopies(t *testing.T) {
	t.Parallel()
	v := newVFS(t, nil)
	path := filepath.Join(t.TempDir(), "db")
	db, rows := liveDB(t, v, path)
	defer db.Close()
	dir := t.TempDir()
	viaVFS := filepath.Join(dir, "vfs.db")
	mustExec(t, db, "VACUUM INTO ?", viaVFS)
	if seal, err := sqlitevfs.Verify(viaVFS); err != nil || seal != sqlitevfs.Sealed {
		t.Fatalf("Verify of a VACUUM INTO copy made through the VFS = %v, %v; want sealed", seal, err)
	}
	plain, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	viaShell := filepath.Join(dir, "shell.db")
	mustExec(t, plain, "VACUUM INTO ?", viaShell)
	seal, err := sqlitevfs.Verify(viaShell)
	if err != nil || seal != sqlitevfs.Blank {
		t.Fatalf("Verify of a VACUUM INTO copy made by plain SQLite = %v, %v; want blank", seal, err)
	}
	n, err := sqlitevfs.Reseal(viaShell)
	if err != nil || n == 0 {
		t.Fatalf("Reseal = %d, %v", n, err)
	}
	for _, copyPath := range []string{viaVFS, viaShell} {
		if seal, err := sqlitevfs.Verify(copyPath); err != nil || seal != sqlitevfs.Sealed {
			t.Fatalf("Verify(%s) = %v, %v; want sealed", filepath.Base(copyPath), seal, err)
		}
		copyDB := openDB(t, v, copyPath)
		var got int
		if err := copyDB.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&got); err != nil || got != rows {
			t.Fatalf("%s holds %d rows (%v), want %d", filepath.Base(copyPath), got, err, rows)
		}
		copyDB.Close()
	}
}

// TestCommitIsOneWALWrite: the frames of one transaction reach the WAL in
// one write call, however many pages it changed, up to the 120 KiB one
// call may carry; larger transactions take one call per 120 KiB. What
// they hold reads back, from this connection and from SQLite's own VFS
// after a crash (a copy of the files taken while the database is open).
func TestCommitIsOneWALWrite(t *testing.T) {
	t.Parallel()
	faults, _, path, db := newFaultyDB(t)
	defer db.Close()
	mustExec(t, db, "PRAGMA wal_autocheckpoint = 0")
	mustExec(t, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
	mustExec(t, db, "CREATE INDEX t_v ON t (v)")
	walSize := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	insert := func(rows, round int) (writes int, bytes int64) {
		beforeW, beforeB := faults.Writes("-wal"), walSize()
		tx, err := db.BeginTx(t.Context(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range rows {
			if _, err := tx.ExecContext(t.Context(), "INSERT INTO t (v) VALUES (?)", strings.Repeat(fmt.Sprint((round+i)%10), 500)); err != nil {
				t.Fatalf("round %d: insert: %v", round, err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatalf("round %d: commit: %v", round, err)
		}
		return faults.Writes("-wal") - beforeW, walSize() - beforeB
	}
	total := 0
	for round := range 5 {
		// 20 rows of 500 bytes, each in the table and the index: eight
		// pages or more.
		writes, bytes := insert(20, round)
		total += 20
		if writes != 1 || bytes < 8*4096 {
			t.Fatalf("round %d: %d WAL writes for %d bytes of frames, want 1", round, writes, bytes)
		}
	}
	// A commit of about a megabyte: a handful of calls, not a pair per
	// page.
	writes, bytes := insert(1000, 0)
	total += 1000
	if most := int(bytes/(100<<10)) + 2; writes > most || bytes < 1<<20 {
		t.Fatalf("%d WAL writes for %d bytes of frames, want at most %d", writes, bytes, most)
	}
	var n int
	if err := db.QueryRowContext(t.Context(), "SELECT count(*) FROM t WHERE length(v) = 500").Scan(&n); err != nil || n != total {
		t.Fatalf("read back %d rows (%v), want %d", n, err, total)
	}
	_, plain := crashCopy(t, path)
	defer plain.Close()
	if err := plain.QueryRowContext(t.Context(), "SELECT count(*) FROM t").Scan(&n); err != nil || n != total {
		t.Fatalf("SQLite's own VFS recovered %d rows (%v), want %d", n, err, total)
	}
}

// crashCopy copies the database at path and its WAL, as a crash while it
// is open leaves them, and opens the copy with SQLite's own VFS.
func crashCopy(t *testing.T, path string) (string, *sql.DB) {
	t.Helper()
	crash := filepath.Join(t.TempDir(), "db")
	for _, suffix := range []string{"", "-wal"} {
		data, err := os.ReadFile(path + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(crash+suffix, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	plain, err := sql.Open("sqlite", "file:"+crash)
	if err != nil {
		t.Fatal(err)
	}
	return crash, plain
}

// newFaultyDB creates a sealed database under a VFS with a fault plan and
// opens it with the store's durable settings.
func newFaultyDB(t *testing.T) (*sqlitevfs.Faults, *sqlitevfs.VFS, string, *sql.DB) {
	t.Helper()
	faults := sqlitevfs.NewFaults()
	v := newVFS(t, faults)
	path := filepath.Join(t.TempDir(), "db")
	if err := sqlitevfs.CreateDatabase(path); err != nil {
		t.Fatal(err)
	}
	return faults, v, path, openDB(t, v, path)
}
