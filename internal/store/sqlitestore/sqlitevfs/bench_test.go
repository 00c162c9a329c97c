package sqlitevfs

import (
	"database/sql"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the database/sql driver
)

// BenchmarkSealPage measures the checksum of one page, the cost added to
// every page written to or read from the database file.
func BenchmarkSealPage(b *testing.B) {
	page := make([]byte, PageSize)
	for i := range page {
		page[i] = byte(i * 7)
	}
	b.SetBytes(PageSize)
	b.ReportAllocs()
	for b.Loop() {
		sealPage(page, 42)
	}
}

// BenchmarkVerify measures Verify, the check of every page at Open, on a
// 64 MiB file of random sealed pages (read from the page cache).
func BenchmarkVerify(b *testing.B) {
	const pages = 64 << 20 / PageSize
	path := filepath.Join(b.TempDir(), "db")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, PageSize)
	for pgno := uint32(1); pgno <= pages; pgno++ {
		for i := 0; i < len(page); i += 8 {
			binary.LittleEndian.PutUint64(page[i:], rng.Uint64())
		}
		if pgno == 1 {
			copy(page, magic)
			page[16], page[17] = PageSize>>8, 0
			page[reserveOffset] = ReservedBytes
			binary.BigEndian.PutUint32(page[24:], 1)
			binary.BigEndian.PutUint32(page[28:], pages)
			binary.BigEndian.PutUint32(page[92:], 1)
		}
		sealPage(page, pgno)
		if _, err := f.Write(page); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(pages * PageSize)
	for b.Loop() {
		if seal, err := Verify(path); err != nil || seal != Sealed {
			b.Fatalf("Verify = %v, %v", seal, err)
		}
	}
}

// BenchmarkInsert compares inserts through this VFS (sealed pages) with
// the same inserts through SQLite's own VFS, without fsync so that the
// VFS's CPU cost is what differs. Each op is one transaction of 100 rows
// of about 200 bytes; a small checkpoint interval makes every page pass
// through a checkpoint write too.
func BenchmarkInsert(b *testing.B) {
	for _, sealed := range []bool{false, true} {
		b.Run(fmt.Sprintf("sealed=%v", sealed), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "db")
			q := url.Values{}
			if sealed {
				v, err := New(Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer v.Close()
				if err := CreateDatabase(path); err != nil {
					b.Fatal(err)
				}
				q.Set("vfs", v.Name())
			}
			q.Add("_pragma", "journal_mode(WAL)")
			q.Add("_pragma", "synchronous(OFF)")
			q.Add("_pragma", "wal_autocheckpoint(100)")
			q.Add("_pragma", "cache_size(-2048)")
			db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			if _, err := db.ExecContext(b.Context(), "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
				b.Fatal(err)
			}
			row := fmt.Sprintf("%0200d", 7)
			b.ReportAllocs()
			for b.Loop() {
				tx, err := db.BeginTx(b.Context(), nil)
				if err != nil {
					b.Fatal(err)
				}
				for range 100 {
					if _, err := tx.ExecContext(b.Context(), "INSERT INTO t (v) VALUES (?)", row); err != nil {
						b.Fatal(err)
					}
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
