package sqlitevfs

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"runtime"

	sqlite3 "modernc.org/sqlite/lib"
)

// ReservedBytes is how many bytes at the end of each page hold its seal:
// a CRC-32C and a tag.
const ReservedBytes = 8

// PageSize is the page size of the databases CreateDatabase makes.
const PageSize = 4096

// The parts of the SQLite database header (https://sqlite.org/fileformat.html)
// that the seal depends on.
const (
	magic         = "SQLite format 3\x00"
	headerSize    = 100
	reserveOffset = 20
)

// sealTag marks a page sealed by this package, format 1. Its bytes are not
// text, so the end of an unsealed page (SQL text of the schema on page 1)
// does not carry it by chance.
var sealTag = [4]byte{0xd5, 0x1f, 0xc2, 0x01}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is matched (errors.Is) by every *CorruptError.
var ErrCorrupt = errors.New("data file corrupt")

// CorruptError reports a database file whose content changed at rest: a
// page whose checksum does not match, or a damaged header.
type CorruptError struct {
	// Path is the database file.
	Path string
	// Page is the damaged page, numbered from 1.
	Page uint32
	// Reason says what is wrong with it.
	Reason string
}

// Error implements error.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("data file %s is corrupt: page %d: %s; restore it from a backup", e.Path, e.Page, e.Reason)
}

// Is reports whether target is ErrCorrupt.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// SyncError reports an fsync that failed.
type SyncError struct {
	// Path is the file that could not be synced.
	Path string
	// Code is SQLite's extended result code.
	Code int
}

// Error implements error.
func (e *SyncError) Error() string {
	return fmt.Sprintf("fsync of %s failed (SQLite error %d): writes since the last successful fsync may be lost", e.Path, e.Code)
}

// pageSizeOf returns the page size in a database header, or 0 when the
// field holds no valid page size.
func pageSizeOf(hdr []byte) int {
	v := int(binary.BigEndian.Uint16(hdr[16:18]))
	if v == 1 {
		return 65536
	}
	if v > 32768 || !pageSizeOK(v) {
		return 0
	}
	return v
}

// pageSizeOK reports whether n is a size SQLite's pages can have.
func pageSizeOK(n int) bool { return n >= 512 && n <= 65536 && n&(n-1) == 0 }

// checksum is the CRC-32C of the page without its reserved bytes, started
// from the page number instead of zero: a page written at the wrong
// offset fails too (distinct starting values always give distinct CRCs of
// the same bytes).
//
// On page 1 it leaves out the header fields that SQLite rewrites outside
// its page writes: a backup (sqlite3's .backup) sets the copy's change
// counter and version-valid-for (offsets 24 and 92), page count (28),
// schema cookie (40) and the version of SQLite (96). Verify checks the
// first three against each other and against the file instead; the
// cookie and the version hold no data.
func checksum(page []byte, pgno uint32) uint32 {
	body := page[:len(page)-ReservedBytes]
	if pgno != 1 {
		return crc32.Update(pgno, castagnoli, body)
	}
	c := crc32.Update(pgno, castagnoli, body[:24])
	c = crc32.Update(c, castagnoli, body[32:40])
	c = crc32.Update(c, castagnoli, body[44:92])
	return crc32.Update(c, castagnoli, body[100:])
}

// sealPage writes the seal of page pgno into its last ReservedBytes.
func sealPage(page []byte, pgno uint32) {
	seal := page[len(page)-ReservedBytes:]
	binary.LittleEndian.PutUint32(seal, checksum(page, pgno))
	copy(seal[4:], sealTag[:])
}

// checkPage returns why page pgno fails its seal, or "" when it holds.
func checkPage(page []byte, pgno uint32) string {
	seal := page[len(page)-ReservedBytes:]
	if [4]byte(seal[4:]) != sealTag {
		return "no checksum"
	}
	if binary.LittleEndian.Uint32(seal) != checksum(page, pgno) {
		return "checksum mismatch"
	}
	return ""
}

// CreateDatabase creates a new, empty SQLite database at path, in WAL mode,
// whose pages reserve ReservedBytes for their seal. It fails if path
// exists. The file and its directory are synced before it returns.
//
// SQLite fixes a database's reserved bytes when it writes the first page,
// and offers no pragma to choose them; writing the one-page empty database
// that SQLite itself would write, with the reserve set, is the portable
// way to get them.
func CreateDatabase(path string) error {
	page := make([]byte, PageSize)
	copy(page, magic)
	binary.BigEndian.PutUint16(page[16:], PageSize)
	page[18], page[19] = 2, 2 // WAL: write and read versions
	page[reserveOffset] = ReservedBytes
	page[21], page[22], page[23] = 64, 32, 32 // payload fractions, fixed by the format
	binary.BigEndian.PutUint32(page[24:], 1)  // file change counter
	binary.BigEndian.PutUint32(page[28:], 1)  // database size in pages
	// Offsets 32-91 stay zero: no free pages, schema cookie, format and
	// text encoding unset (SQLite sets them with the first table), no
	// auto-vacuum, user_version 0.
	binary.BigEndian.PutUint32(page[92:], 1) // version-valid-for: the change counter
	binary.BigEndian.PutUint32(page[96:], sqlite3.SQLITE_VERSION_NUMBER)
	// Page 1 also holds the root of sqlite_schema: an empty table leaf
	// whose cell content area starts at the end of the usable space.
	page[headerSize] = 0x0d
	binary.BigEndian.PutUint16(page[headerSize+5:], PageSize-ReservedBytes)
	sealPage(page, 1)

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	if _, err := f.Write(page); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create database: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("create database: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir makes a new directory entry durable. Windows has no fsync of a
// directory (NTFS journals the entry itself).
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Seal says how the pages of a database file are protected.
type Seal int

const (
	// Unsealed files reserve no bytes for seals: made before checksums
	// existed, or by other programs. Nothing in them can be checked.
	Unsealed Seal = iota
	// Sealed files carry a seal on every page.
	Sealed
	// Blank files reserve the bytes but hold no seal in them: copies that
	// SQLite wrote page by page, such as VACUUM INTO makes of a sealed
	// database. Reseal seals them.
	Blank
)

// String returns the name of s.
func (s Seal) String() string {
	switch s {
	case Sealed:
		return "sealed"
	case Blank:
		return "blank"
	default:
		return "unsealed"
	}
}

// Verify checks the seal of every page of the database file at path. The
// file must not be open for writing, and its WAL, if any, must have been
// checkpointed first: a checkpoint cut short by a crash can leave torn
// pages that only the WAL's copy repairs.
//
// It returns how the file is protected, and for a sealed file a
// *CorruptError for the first page that fails its seal or a damaged
// header; for a blank one, a *CorruptError for a page whose reserved bytes
// are not blank. An empty file is Unsealed. Pages that are all zeros are
// skipped: SQLite leaves such holes where it allocated a page and freed it
// before writing it, and never reads them; a zeroed page that SQLite does
// read fails its seal at that read.
func Verify(path string) (Seal, error) {
	f, err := os.Open(path)
	if err != nil {
		return Unsealed, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	hdr := make([]byte, headerSize)
	n, err := io.ReadFull(r, hdr)
	switch {
	case n == 0 && errors.Is(err, io.EOF):
		return Unsealed, nil // a new, empty file
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Unsealed, &CorruptError{Path: path, Page: 1, Reason: fmt.Sprintf("file is %d bytes, too short for a database header", n)}
	case err != nil:
		return Unsealed, err
	}
	if string(hdr[:len(magic)]) != magic {
		return Unsealed, &CorruptError{Path: path, Page: 1, Reason: "header does not start with the SQLite format string"}
	}
	ps := pageSizeOf(hdr)
	if ps == 0 {
		return Unsealed, &CorruptError{Path: path, Page: 1, Reason: fmt.Sprintf("header gives an invalid page size (%d)", binary.BigEndian.Uint16(hdr[16:18]))}
	}
	page := make([]byte, ps)
	copy(page, hdr)
	if _, err := io.ReadFull(r, page[headerSize:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return Unsealed, &CorruptError{Path: path, Page: 1, Reason: "file is shorter than one page"}
		}
		return Unsealed, err
	}
	tagged := [4]byte(page[ps-4:]) == sealTag
	if hdr[reserveOffset] != ReservedBytes {
		if tagged {
			// A sealed file whose header lost its reserve: SQLite would
			// read every page with the wrong layout.
			return Unsealed, &CorruptError{Path: path, Page: 1, Reason: fmt.Sprintf("header reserves %d bytes per page, the file was made with %d", hdr[reserveOffset], ReservedBytes)}
		}
		return Unsealed, nil
	}
	kind := Sealed
	if allZero(page[ps-ReservedBytes:]) {
		kind = Blank
	}
	if err := checkHeader(f, path, hdr, ps); err != nil {
		return kind, err
	}
	for pgno := uint32(1); ; pgno++ {
		if pgno > 1 {
			if _, err := io.ReadFull(r, page); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					// A partial last page is past the database's end:
					// SQLite never reads it.
					return kind, nil
				}
				return kind, err
			}
			if allZero(page) {
				continue
			}
		}
		reason := ""
		switch {
		case kind == Sealed:
			reason = checkPage(page, pgno)
		case !allZero(page[ps-ReservedBytes:]):
			reason = "a page of a file without checksums has data in the bytes reserved for one"
		}
		if reason != "" {
			return kind, &CorruptError{Path: path, Page: pgno, Reason: reason}
		}
	}
}

// Reseal seals every page of a Blank database file at path (see Verify),
// in place, and syncs the file. Only the reserved bytes of each page
// change, so a write torn by a crash leaves either the blank or the sealed
// page. It returns how many pages it sealed. The file must not be open.
func Reseal(path string) (int, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return 0, fmt.Errorf("reseal %s: %w", path, err)
	}
	ps := pageSizeOf(hdr)
	if string(hdr[:len(magic)]) != magic || ps == 0 || hdr[reserveOffset] != ReservedBytes {
		return 0, fmt.Errorf("reseal %s: not a database with %d reserved bytes per page", path, ReservedBytes)
	}
	page := make([]byte, ps)
	sealed := 0
	for pgno := uint32(1); ; pgno++ {
		off := int64(pgno-1) * int64(ps)
		if _, err := f.ReadAt(page, off); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return sealed, err
		}
		if allZero(page) || !allZero(page[ps-ReservedBytes:]) {
			continue
		}
		sealPage(page, pgno)
		if _, err := f.WriteAt(page[ps-ReservedBytes:], off+int64(ps-ReservedBytes)); err != nil {
			return sealed, err
		}
		sealed++
	}
	if err := f.Sync(); err != nil {
		return sealed, err
	}
	return sealed, f.Close()
}

// checkHeader checks the header fields that page 1's seal leaves out (see
// checksum) against each other and the file: SQLite writes the change
// counter and the version-valid-for together, and a database file holds
// as many pages as its header says once its WAL is checkpointed.
func checkHeader(f *os.File, path string, hdr []byte, ps int) error {
	counter, valid := binary.BigEndian.Uint32(hdr[24:]), binary.BigEndian.Uint32(hdr[92:])
	if counter != valid {
		return &CorruptError{Path: path, Page: 1, Reason: fmt.Sprintf("header's change counter (%d) and version-valid-for (%d) differ", counter, valid)}
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if pages, inFile := int64(binary.BigEndian.Uint32(hdr[28:])), fi.Size()/int64(ps); pages != inFile {
		return &CorruptError{Path: path, Page: 1, Reason: fmt.Sprintf("header gives %d pages, the file holds %d", pages, inFile)}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
