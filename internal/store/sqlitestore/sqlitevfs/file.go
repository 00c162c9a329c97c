package sqlitevfs

import (
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// file is the Go side of one open file. SQLite calls the methods of one
// file from one connection at a time, so its fields need no lock; what
// files share (the fault plan) has its own.
type file struct {
	v     *VFS
	inner uintptr // the wrapped sqlite3_file
	m     *sqlite3.Tsqlite3_io_methods
	path  string
	// mainDB marks the main database file.
	mainDB bool
	// wal is the state of a WAL file, nil for other files.
	wal *walFile
	// sealed and pageSize come from the database header, as it is read or
	// written: pages are sealed when it reserves ReservedBytes per page.
	sealed   bool
	pageSize int64
	// headerSeen: a header was read or written. Until then (a new file)
	// full pages are written unsealed, and their offsets kept in early to
	// be sealed once page 1 shows the file is.
	headerSeen bool
	early      []int64
	// track is the file's record in the fault plan, nil without one.
	track *track
}

// The signatures of the sqlite3_io_methods, as modernc calls them.
type (
	closeFn     = func(*libc.TLS, uintptr) int32
	readFn      = func(*libc.TLS, uintptr, uintptr, int32, int64) int32
	truncateFn  = func(*libc.TLS, uintptr, int64) int32
	syncFn      = func(*libc.TLS, uintptr, int32) int32
	ptrArgFn    = func(*libc.TLS, uintptr, uintptr) int32
	intArgFn    = func(*libc.TLS, uintptr, int32) int32
	controlFn   = func(*libc.TLS, uintptr, int32, uintptr) int32
	noArgFn     = func(*libc.TLS, uintptr) int32
	shmMapFn    = func(*libc.TLS, uintptr, int32, int32, int32, uintptr) int32
	shmLockFn   = func(*libc.TLS, uintptr, int32, int32, int32) int32
	shmBarrierF = func(*libc.TLS, uintptr)
)

// fillIOMethods builds the one method table of the package's files.
// Version 2 has the shared-memory methods that WAL needs and no xFetch:
// SQLite then never maps the file into memory, so every page it reads
// passes through xRead and its checksum.
func fillIOMethods() {
	m := &ioMethods
	m.FiVersion = 2
	setFn(&m.FxClose, fileClose)
	setFn(&m.FxRead, fileRead)
	setFn(&m.FxWrite, fileWrite)
	setFn(&m.FxTruncate, fileTruncate)
	setFn(&m.FxSync, fileSync)
	setFn(&m.FxFileSize, fileFileSize)
	setFn(&m.FxLock, fileLock)
	setFn(&m.FxUnlock, fileUnlock)
	setFn(&m.FxCheckReservedLock, fileCheckReservedLock)
	setFn(&m.FxFileControl, fileFileControl)
	setFn(&m.FxSectorSize, fileSectorSize)
	setFn(&m.FxDeviceCharacteristics, fileDeviceCharacteristics)
	setFn(&m.FxShmMap, fileShmMap)
	setFn(&m.FxShmLock, fileShmLock)
	setFn(&m.FxShmBarrier, fileShmBarrier)
	setFn(&m.FxShmUnmap, fileShmUnmap)
}

func fileOf(pFile uintptr) *file {
	f, _ := files.Load(*(*uintptr)(ptr(pFile + handleOffset)))
	return f.(*file)
}

func fileClose(tls *libc.TLS, pFile uintptr) int32 {
	f := fileOf(pFile)
	rc := f.flushPending(tls)
	if crc := cfunc[closeFn](f.m.FxClose)(tls, f.inner); rc == sqlite3.SQLITE_OK {
		rc = crc
	}
	files.Delete(*(*uintptr)(ptr(pFile + handleOffset)))
	if f.track != nil {
		f.v.faults.detach()
	}
	f.v.open.Add(-1)
	return rc
}

func fileRead(tls *libc.TLS, pFile, zBuf uintptr, n int32, off int64) int32 {
	f := fileOf(pFile)
	if f.v.faults != nil && f.v.faults.isOff() {
		return sqlite3.SQLITE_IOERR_READ
	}
	if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	rc := cfunc[readFn](f.m.FxRead)(tls, f.inner, zBuf, n, off)
	if rc != sqlite3.SQLITE_OK || !f.mainDB {
		return rc
	}
	buf := bytesAt(zBuf, n)
	if off == 0 {
		f.readHeader(buf)
	}
	if f.sealed && int64(n) == f.pageSize && off%f.pageSize == 0 {
		pgno := pageNo(off, f.pageSize)
		if reason := checkPage(buf, pgno); reason != "" {
			f.v.noteCorrupt(&CorruptError{Path: f.path, Page: pgno, Reason: reason})
			return sqlite3.SQLITE_IOERR_DATA
		}
	}
	return rc
}

func fileWrite(tls *libc.TLS, pFile, zBuf uintptr, n int32, off int64) int32 {
	f := fileOf(pFile)
	if f.mainDB {
		buf := bytesAt(zBuf, n)
		if off == 0 {
			f.readHeader(buf)
		}
		switch {
		case f.sealed && int64(n) == f.pageSize && off%f.pageSize == 0:
			// The reserved bytes belong to the VFS: SQLite never reads
			// them, so the seal is written into SQLite's buffer in place.
			sealPage(buf, pageNo(off, f.pageSize))
		case !f.headerSeen && off > 0 && pageSizeOK(int(n)) && off%int64(n) == 0:
			// A new file (VACUUM INTO's target) can get pages before its
			// page 1.
			f.early = append(f.early, off)
		}
	}
	if f.wal != nil {
		return f.walWrite(tls, zBuf, n, off)
	}
	rc := f.put(tls, zBuf, n, off)
	if rc == sqlite3.SQLITE_OK && off == 0 && len(f.early) > 0 {
		rc = f.sealEarly(tls)
	}
	return rc
}

// sealEarly seals the pages written before page 1, if page 1 says the
// file is sealed.
func (f *file) sealEarly(tls *libc.TLS) int32 {
	early := f.early
	f.early = nil
	if !f.sealed {
		return sqlite3.SQLITE_OK
	}
	for _, off := range early {
		page, rc := f.readAt(tls, off, int32(f.pageSize)) //nolint:gosec // G115: a page size
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		if allZero(page) || !allZero(page[len(page)-ReservedBytes:]) {
			continue
		}
		sealPage(page, pageNo(off, f.pageSize))
		if rc := f.putBytes(tls, page, off); rc != sqlite3.SQLITE_OK {
			return rc
		}
	}
	return sqlite3.SQLITE_OK
}

// put writes n bytes at off: through the fault plan when there is one,
// else straight to the wrapped file.
func (f *file) put(tls *libc.TLS, zBuf uintptr, n int32, off int64) int32 {
	if f.v.faults != nil {
		return f.v.faults.write(tls, f, zBuf, n, off)
	}
	return f.writeAt(tls, zBuf, n, off)
}

// pageNo is the number of the page at offset off.
func pageNo(off, pageSize int64) uint32 {
	return uint32(off/pageSize) + 1 //nolint:gosec // G115: SQLite numbers pages in 32 bits (at most 4294967294 pages)
}

// readHeader notes from the database header (the first bytes of a read or
// write at offset 0) the page size and whether pages are sealed.
func (f *file) readHeader(buf []byte) {
	if len(buf) < headerSize || string(buf[:len(magic)]) != magic {
		return
	}
	ps := pageSizeOf(buf)
	f.headerSeen = true
	f.sealed = ps != 0 && buf[reserveOffset] == ReservedBytes
	f.pageSize = int64(ps)
	f.v.sealedDBs.Store(f.path, f.sealed)
}

func fileTruncate(tls *libc.TLS, pFile uintptr, size int64) int32 {
	f := fileOf(pFile)
	if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	if f.v.faults != nil {
		return f.v.faults.truncate(tls, f, size)
	}
	return cfunc[truncateFn](f.m.FxTruncate)(tls, f.inner, size)
}

func fileSync(tls *libc.TLS, pFile uintptr, flags int32) int32 {
	f := fileOf(pFile)
	rc := f.flushPending(tls)
	switch {
	case rc != sqlite3.SQLITE_OK:
	case f.v.faults != nil:
		rc = f.v.faults.sync(tls, f)
	default:
		rc = cfunc[syncFn](f.m.FxSync)(tls, f.inner, flags)
	}
	if rc != sqlite3.SQLITE_OK {
		f.v.noteSyncErr(&SyncError{Path: f.path, Code: int(rc)})
	}
	return rc
}

func fileFileSize(tls *libc.TLS, pFile, pSize uintptr) int32 {
	f := fileOf(pFile)
	if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[ptrArgFn](f.m.FxFileSize)(tls, f.inner, pSize)
}

func fileLock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	f := fileOf(pFile)
	return cfunc[intArgFn](f.m.FxLock)(tls, f.inner, lock)
}

func fileUnlock(tls *libc.TLS, pFile uintptr, lock int32) int32 {
	f := fileOf(pFile)
	return cfunc[intArgFn](f.m.FxUnlock)(tls, f.inner, lock)
}

func fileCheckReservedLock(tls *libc.TLS, pFile, pResOut uintptr) int32 {
	f := fileOf(pFile)
	return cfunc[ptrArgFn](f.m.FxCheckReservedLock)(tls, f.inner, pResOut)
}

func fileFileControl(tls *libc.TLS, pFile uintptr, op int32, pArg uintptr) int32 {
	f := fileOf(pFile)
	if rc := f.flushPending(tls); rc != sqlite3.SQLITE_OK {
		return rc
	}
	return cfunc[controlFn](f.m.FxFileControl)(tls, f.inner, op, pArg)
}

func fileSectorSize(tls *libc.TLS, pFile uintptr) int32 {
	f := fileOf(pFile)
	return cfunc[noArgFn](f.m.FxSectorSize)(tls, f.inner)
}

func fileDeviceCharacteristics(tls *libc.TLS, pFile uintptr) int32 {
	f := fileOf(pFile)
	return cfunc[noArgFn](f.m.FxDeviceCharacteristics)(tls, f.inner)
}

func fileShmMap(tls *libc.TLS, pFile uintptr, region, size, extend int32, pp uintptr) int32 {
	f := fileOf(pFile)
	if f.m.FiVersion < 2 || f.m.FxShmMap == 0 {
		return sqlite3.SQLITE_IOERR_SHMMAP
	}
	return cfunc[shmMapFn](f.m.FxShmMap)(tls, f.inner, region, size, extend, pp)
}

func fileShmLock(tls *libc.TLS, pFile uintptr, offset, n, flags int32) int32 {
	f := fileOf(pFile)
	if f.m.FiVersion < 2 || f.m.FxShmLock == 0 {
		return sqlite3.SQLITE_IOERR_SHMLOCK
	}
	return cfunc[shmLockFn](f.m.FxShmLock)(tls, f.inner, offset, n, flags)
}

func fileShmBarrier(tls *libc.TLS, pFile uintptr) {
	f := fileOf(pFile)
	if f.m.FiVersion >= 2 && f.m.FxShmBarrier != 0 {
		cfunc[shmBarrierF](f.m.FxShmBarrier)(tls, f.inner)
	}
}

func fileShmUnmap(tls *libc.TLS, pFile uintptr, deleteFlag int32) int32 {
	f := fileOf(pFile)
	if f.m.FiVersion < 2 || f.m.FxShmUnmap == 0 {
		return sqlite3.SQLITE_OK
	}
	return cfunc[intArgFn](f.m.FxShmUnmap)(tls, f.inner, deleteFlag)
}

// size returns the file's size through the wrapped VFS.
func (f *file) size(tls *libc.TLS) (int64, int32) {
	p := tls.Alloc(8)
	defer tls.Free(8)
	rc := cfunc[ptrArgFn](f.m.FxFileSize)(tls, f.inner, p)
	return *(*int64)(ptr(p)), rc
}

// readAt reads n bytes at off through the wrapped VFS; bytes past the end
// of the file read as zeros.
func (f *file) readAt(tls *libc.TLS, off int64, n int32) ([]byte, int32) {
	p := sqlite3.Xsqlite3_malloc(tls, n)
	if p == 0 {
		return nil, sqlite3.SQLITE_NOMEM
	}
	defer sqlite3.Xsqlite3_free(tls, p)
	rc := cfunc[readFn](f.m.FxRead)(tls, f.inner, p, n, off)
	if rc != sqlite3.SQLITE_OK && rc != sqlite3.SQLITE_IOERR_SHORT_READ {
		return nil, rc
	}
	return append([]byte(nil), bytesAt(p, n)...), sqlite3.SQLITE_OK
}

// writeAt writes buf at off through the wrapped VFS.
func (f *file) writeAt(tls *libc.TLS, zBuf uintptr, n int32, off int64) int32 {
	return cfunc[readFn](f.m.FxWrite)(tls, f.inner, zBuf, n, off)
}
