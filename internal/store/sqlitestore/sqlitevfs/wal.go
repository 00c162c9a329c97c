package sqlitevfs

import (
	"encoding/binary"
	"strings"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// Pages reach the database file by way of the WAL, and a live copy of the
// database (sqlite3's .backup) takes each page from the WAL when it is
// there. So pages are sealed on their way into the WAL too, not only at
// the checkpoint.
//
// That changes bytes that SQLite has already covered with its own WAL
// checksum: each frame's header holds a checksum of the frame, chained
// from the one before (https://sqlite.org/fileformat.html#wal_file_format).
// SQLite writes a frame as two writes, the 24-byte header and then the
// page. The VFS holds the header back, seals the page, recomputes the
// header's checksum over the sealed page from the previous frame's
// checksum as it is on disk, and writes both. The chain on disk is then
// consistent: SQLite verifies it only when it recovers the WAL, from the
// disk. The running checksum SQLite keeps in memory is only ever used to
// write the next frame, whose checksum the VFS recomputes anyway.
//
// When SQLite rewrites a frame's page in place (a page written twice in
// one transaction), it zeroes the checksums of the frames it writes and
// recomputes the chain from the disk before the commit
// (walRewriteChecksums); such header writes pass through unchanged.
//
// Sealed frames are not written one by one either: the VFS gathers the
// frames SQLite appends and writes them in one call when it has the
// transaction's commit frame (or 1 MiB, or before anything else touches
// the file: a read, a sync, another write, a truncation, the size, a
// file control or the close). A commit of n pages is then one write
// instead of 2n, each of which is a system call that costs tens of
// microseconds on a virtual disk, on the path of every acknowledgement.
// Nothing is less durable for it: no frame was durable before the sync
// that follows, and other connections see frames only once the commit
// is published in the WAL index, after its frames are written.

const (
	walHeaderSize      = 32
	walFrameHeaderSize = 24
)

// walFile is the state of a WAL file handle that seals pages.
type walFile struct {
	// dbPath is the path of the database the WAL belongs to.
	dbPath string
	// From the WAL header: the page size, the byte order of the checksum
	// words, and the header's checksum, the seed of the first frame.
	pageSize  int64
	bigEndian bool
	hdrSalt   [8]byte
	hdrSum    [2]uint32
	// pending is a frame header held back until its page is written, at
	// offset pendingOff.
	pending    []byte
	pendingOff int64
	// frames are whole sealed frames appended but not yet written, from
	// offset framesOff on.
	frames    []byte
	framesOff int64
	// last is the frame this handle wrote last: its offset, salt and
	// checksum, the seed of the frame after it.
	lastOff  int64
	lastSalt [8]byte
	lastSum  [2]uint32
}

func newWALFile(path string) *walFile {
	return &walFile{dbPath: strings.TrimSuffix(path, "-wal"), lastOff: -1}
}

// walSum is SQLite's WAL checksum of b (a multiple of 8 bytes), continued
// from s.
func walSum(bigEndian bool, b []byte, s [2]uint32) [2]uint32 {
	order := binary.ByteOrder(binary.LittleEndian)
	if bigEndian {
		order = binary.BigEndian
	}
	s1, s2 := s[0], s[1]
	for i := 0; i+8 <= len(b); i += 8 {
		s1 += order.Uint32(b[i:]) + s2
		s2 += order.Uint32(b[i+4:]) + s1
	}
	return [2]uint32{s1, s2}
}

// walWrite writes to a WAL file, sealing pages on the way when the
// database is sealed.
func (f *file) walWrite(tls *libc.TLS, zBuf uintptr, n int32, off int64) int32 {
	w := f.wal
	if w.pageSize == 0 && off >= walHeaderSize {
		// A WAL this handle did not start: learn its header from disk.
		if rc := f.walLoadHeader(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	ps := w.pageSize
	frameSize := walFrameHeaderSize + ps
	switch {
	case off == 0 && n == walHeaderSize:
		if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
		w.setHeader(bytesAt(zBuf, n))
		return f.put(tls, zBuf, n, off)
	case ps > 0 && n == walFrameHeaderSize && off >= walHeaderSize && (off-walHeaderSize)%frameSize == 0 && f.v.dbSealed(w.dbPath):
		// A header held back with no page after it goes out first; the
		// frames held stay held, to go out with the ones after them.
		if w.pending != nil {
			if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
				return rc
			}
		}
		w.pending = append(w.pending[:0], bytesAt(zBuf, n)...)
		w.pendingOff = off
		return sqlite3.SQLITE_OK
	case ps > 0 && int64(n) == ps && off >= walHeaderSize+walFrameHeaderSize &&
		(off-walHeaderSize-walFrameHeaderSize)%frameSize == 0 && f.v.dbSealed(w.dbPath):
		return f.walWritePage(tls, zBuf, n, off)
	default:
		if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
		return f.put(tls, zBuf, n, off)
	}
}

// walMagic is the WAL header's magic number, less its last bit (the byte
// order of the checksums).
const walMagic = 0x377f0682

// setHeader takes the WAL's header fields from hdr; a header that is not
// one leaves the page size unknown, and pages unsealed.
func (w *walFile) setHeader(hdr []byte) {
	w.lastOff = -1
	if binary.BigEndian.Uint32(hdr)&^1 != walMagic {
		w.pageSize = 0
		return
	}
	w.pageSize = int64(binary.BigEndian.Uint32(hdr[8:]))
	w.bigEndian = hdr[3]&1 == 1
	copy(w.hdrSalt[:], hdr[16:24])
	w.hdrSum = [2]uint32{binary.BigEndian.Uint32(hdr[24:]), binary.BigEndian.Uint32(hdr[28:])}
}

// walLoadHeader reads the WAL header from disk.
func (f *file) walLoadHeader(tls *libc.TLS) int32 {
	hdr, rc := f.readAt(tls, 0, walHeaderSize)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	f.wal.setHeader(hdr)
	return sqlite3.SQLITE_OK
}

// walWritePage seals a page written into a frame and writes it with its
// header.
func (f *file) walWritePage(tls *libc.TLS, zBuf uintptr, n int32, off int64) int32 {
	w := f.wal
	page := bytesAt(zBuf, n)
	hdrOff := off - walFrameHeaderSize
	if w.pending == nil || w.pendingOff != hdrOff {
		// The page of a frame already written, rewritten in place: SQLite
		// recomputes the chain from the disk before it commits.
		if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
		hdr, rc := f.readAt(tls, hdrOff, walFrameHeaderSize)
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		sealPage(page, binary.BigEndian.Uint32(hdr))
		return f.put(tls, zBuf, n, off)
	}
	hdr := w.pending
	w.pending = nil
	sealPage(page, binary.BigEndian.Uint32(hdr))
	var salt [8]byte
	copy(salt[:], hdr[8:16])
	seed, rc := f.walSeed(tls, hdrOff, salt)
	if rc != sqlite3.SQLITE_OK {
		return rc
	}
	sum := walSum(w.bigEndian, page, walSum(w.bigEndian, hdr[:8], seed))
	binary.BigEndian.PutUint32(hdr[16:], sum[0])
	binary.BigEndian.PutUint32(hdr[20:], sum[1])
	if len(w.frames) > 0 && w.framesOff+int64(len(w.frames)) != hdrOff {
		if rc := f.flushFrames(tls); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	if len(w.frames) == 0 {
		w.framesOff = hdrOff
	}
	w.frames = append(append(w.frames, hdr...), page...)
	w.lastOff, w.lastSalt, w.lastSum = hdrOff, salt, sum
	if binary.BigEndian.Uint32(hdr[4:]) != 0 || len(w.frames) >= maxHeldFrames {
		// A commit frame (it carries the database's size after the
		// commit), or enough held.
		return f.flushFrames(tls)
	}
	return sqlite3.SQLITE_OK
}

const (
	// maxHeldFrames bounds the bytes of frames held before they are
	// written.
	maxHeldFrames = 1 << 20
	// maxWrite is the most one write call takes: SQLite's unix VFS
	// writes at most 128 KiB - 1 bytes per call (seekAndWriteFd masks
	// the length to 17 bits) and reports the rest as a full disk.
	maxWrite = 120 << 10
)

// flushFrames writes the frames held back, in as few calls as the
// wrapped VFS allows.
func (f *file) flushFrames(tls *libc.TLS) int32 {
	w := f.wal
	if w == nil || len(w.frames) == 0 {
		return sqlite3.SQLITE_OK
	}
	rc := int32(sqlite3.SQLITE_OK)
	for b, off := w.frames, w.framesOff; len(b) > 0 && rc == sqlite3.SQLITE_OK; {
		k := min(len(b), maxWrite)
		rc = f.putBytes(tls, b[:k], off)
		b, off = b[k:], off+int64(k)
	}
	if cap(w.frames) > maxHeldFrames {
		w.frames = nil // a one-off large transaction: do not keep its buffer
	} else {
		w.frames = w.frames[:0]
	}
	return rc
}

// walSeed returns the checksum that the frame at hdrOff continues: the WAL
// header's for the first frame, else the previous frame's, as this handle
// wrote it or as it is on disk.
func (f *file) walSeed(tls *libc.TLS, hdrOff int64, salt [8]byte) ([2]uint32, int32) {
	w := f.wal
	if hdrOff == walHeaderSize {
		if salt == w.hdrSalt {
			return w.hdrSum, sqlite3.SQLITE_OK
		}
		b, rc := f.readAt(tls, 0, walHeaderSize)
		if rc != sqlite3.SQLITE_OK {
			return [2]uint32{}, rc
		}
		return [2]uint32{binary.BigEndian.Uint32(b[24:]), binary.BigEndian.Uint32(b[28:])}, sqlite3.SQLITE_OK
	}
	prev := hdrOff - walFrameHeaderSize - w.pageSize
	// Within one WAL generation (one salt) frames are only appended, so a
	// frame this handle wrote is still on disk as it wrote it.
	if prev == w.lastOff && salt == w.lastSalt {
		return w.lastSum, sqlite3.SQLITE_OK
	}
	if rc := f.flushFrames(tls); rc != sqlite3.SQLITE_OK {
		return [2]uint32{}, rc
	}
	b, rc := f.readAt(tls, prev, walFrameHeaderSize)
	if rc != sqlite3.SQLITE_OK {
		return [2]uint32{}, rc
	}
	return [2]uint32{binary.BigEndian.Uint32(b[16:]), binary.BigEndian.Uint32(b[20:])}, sqlite3.SQLITE_OK
}

// flushPending writes what is held back: the frames, and a frame header
// as it is (no page followed it: SQLite rewriting the chain's
// checksums).
func (f *file) flushPending(tls *libc.TLS) int32 {
	if rc := f.flushFrames(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	w := f.wal
	if w == nil || w.pending == nil {
		return sqlite3.SQLITE_OK
	}
	hdr, off := w.pending, w.pendingOff
	w.pending = nil
	return f.putBytes(tls, hdr, off)
}

// putBytes writes Go bytes at off, through a copy in C memory.
func (f *file) putBytes(tls *libc.TLS, b []byte, off int64) int32 {
	n := int32(len(b)) //nolint:gosec // G115: a frame header
	p := sqlite3.Xsqlite3_malloc(tls, n)
	if p == 0 {
		return sqlite3.SQLITE_NOMEM
	}
	defer sqlite3.Xsqlite3_free(tls, p)
	copy(bytesAt(p, n), b)
	return f.put(tls, p, n, off)
}
