// Package sqlitevfs is the file layer under Drover's embedded store: a
// SQLite VFS written in Go for modernc.org/sqlite. It wraps the platform's
// default VFS ("unix" or "win32") and forwards everything to it, adding two
// things on the way.
//
// # Page checksums
//
// A database made by [CreateDatabase] reserves 8 bytes at the end of every
// page (SQLite's "reserved bytes", which it never reads or writes). The VFS
// seals every whole page written to the database file or into a WAL frame:
// the first 4 reserved bytes get the CRC-32C of the page, started from its
// page number, the last 4 a fixed tag. Whenever a whole page is read from
// the database file, the VFS checks the seal and fails the read with
// SQLITE_IOERR_DATA on a mismatch, so a flipped bit is reported, never
// served. [Verify] checks every page of a file that is not open, which the
// store does at start.
//
// Sealing a page in a WAL frame changes bytes that SQLite's own frame
// checksum covers, so the VFS also recomputes the frames' checksum chain
// (see wal.go); pages read back from the WAL are not checked, since SQLite
// verifies the chain when it recovers the WAL. Because every version of a
// page is sealed, a live copy made with SQLite's backup API verifies too.
// The header fields of page 1 that a backup rewrites are left out of its
// seal and checked against each other by Verify instead.
//
// Only files whose header reserves exactly 8 bytes per page are sealed;
// others (made before checksums existed, or by other programs) pass
// through unchanged. A copy that SQLite wrote page by page, such as
// VACUUM INTO makes, keeps the reserve but has no seals: [Verify] reports
// it Blank and [Reseal] seals it.
//
// # Fault injection
//
// A VFS made with a [Faults] plan simulates a disk for tests: it fails the
// n-th fsync, runs out of space after a byte budget, and cuts the power,
// after which [Faults.PowerLoss] drops the writes that no fsync covered.
//
// # Registration
//
// SQLite's list of VFSes is global to the process. [New] registers a VFS
// under a fresh name, to be given to SQLite as the vfs URI parameter, and
// [VFS.Close] unregisters it once no file is open through it.
package sqlitevfs

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// A sqlite3_file of this VFS is the shim's header followed by the wrapped
// VFS's own file:
//
//	offset 0: the io methods pointer (sqlite3_file.pMethods)
//	offset 8: the handle of the Go-side *file
//	offset 16: the wrapped sqlite3_file
//
// 16 bytes keep the wrapped file 8-byte aligned on 32- and 64-bit targets.
const (
	handleOffset = 8
	hdrSize      = 16
)

var (
	// vfses maps the address of each registered sqlite3_vfs to its *VFS.
	vfses sync.Map
	// files maps each open file's handle to its *file.
	files       sync.Map
	lastHandle  atomic.Uintptr
	lastName    atomic.Uint64
	methodsOnce sync.Once
	// ioMethods is the method table of every file opened through a VFS of
	// this package. SQLite holds its address: a package variable never
	// moves and is never freed.
	ioMethods sqlite3.Tsqlite3_io_methods
)

// VFS is one registered instance of the shim. Its methods are safe for
// concurrent use.
type VFS struct {
	name   string
	cname  uintptr // the name, in C memory
	cvfs   uintptr // the registered sqlite3_vfs, in C memory
	inner  uintptr // the wrapped sqlite3_vfs
	faults *Faults

	open    atomic.Int32
	syncErr atomic.Pointer[error]
	// sealedDBs records, by path, whether each database opened through
	// the VFS is sealed, for the WALs that belong to them.
	sealedDBs sync.Map
	corrupt   atomic.Pointer[CorruptError]

	mu     sync.Mutex
	closed bool
}

// Options configure a VFS.
type Options struct {
	// Faults, when set, injects the faults of the plan into every file
	// opened through the VFS. For tests only: with a plan the VFS never
	// calls the real fsync, since the plan decides what is durable.
	Faults *Faults
}

// New registers a new VFS over SQLite's default one and returns it. Open
// a database through it with the URI parameter vfs=v.Name().
func New(opts Options) (*VFS, error) {
	methodsOnce.Do(fillIOMethods)
	tls := libc.NewTLS()
	defer tls.Close()
	inner := sqlite3.Xsqlite3_vfs_find(tls, 0)
	if inner == 0 {
		return nil, errors.New("sqlitevfs: SQLite has no default VFS")
	}
	in := (*sqlite3.Tsqlite3_vfs)(ptr(inner))
	if in.FiVersion < 2 {
		return nil, fmt.Errorf("sqlitevfs: the default VFS is version %d, want 2 or later", in.FiVersion)
	}
	v := &VFS{name: fmt.Sprintf("drover-%d", lastName.Add(1)), inner: inner, faults: opts.Faults}
	var err error
	if v.cname, err = libc.CString(v.name); err != nil {
		return nil, err
	}
	size := unsafe.Sizeof(sqlite3.Tsqlite3_vfs{})
	v.cvfs = sqlite3.Xsqlite3_malloc64(tls, uint64(size))
	if v.cvfs == 0 {
		libc.Xfree(tls, v.cname)
		return nil, errors.New("sqlitevfs: out of memory")
	}
	out := (*sqlite3.Tsqlite3_vfs)(ptr(v.cvfs))
	*out = sqlite3.Tsqlite3_vfs{
		FiVersion:   in.FiVersion,
		FszOsFile:   in.FszOsFile + hdrSize,
		FmxPathname: in.FmxPathname,
		FzName:      v.cname,
		// The dynamic-library and system-call hooks stay the wrapped
		// VFS's (they ignore their VFS argument); every method that uses
		// it is forwarded below. The wrapped VFS's pNext is not read:
		// SQLite changes it under its own lock when VFSes register.
		FxDlOpen:         in.FxDlOpen,
		FxDlError:        in.FxDlError,
		FxDlSym:          in.FxDlSym,
		FxDlClose:        in.FxDlClose,
		FxSetSystemCall:  in.FxSetSystemCall,
		FxGetSystemCall:  in.FxGetSystemCall,
		FxNextSystemCall: in.FxNextSystemCall,
	}
	setFn(&out.FxOpen, vfsOpen)
	setFn(&out.FxDelete, vfsDelete)
	setFn(&out.FxAccess, vfsAccess)
	setFn(&out.FxFullPathname, vfsFullPathname)
	setFn(&out.FxRandomness, vfsRandomness)
	setFn(&out.FxSleep, vfsSleep)
	setFn(&out.FxCurrentTime, vfsCurrentTime)
	setFn(&out.FxGetLastError, vfsGetLastError)
	if in.FiVersion >= 2 && in.FxCurrentTimeInt64 != 0 {
		setFn(&out.FxCurrentTimeInt64, vfsCurrentTimeInt64)
	}
	vfses.Store(v.cvfs, v)
	if rc := sqlite3.Xsqlite3_vfs_register(tls, v.cvfs, 0); rc != sqlite3.SQLITE_OK {
		vfses.Delete(v.cvfs)
		sqlite3.Xsqlite3_free(tls, v.cvfs)
		libc.Xfree(tls, v.cname)
		return nil, fmt.Errorf("sqlitevfs: register %s: SQLite error %d", v.name, rc)
	}
	return v, nil
}

// Name returns the name the VFS is registered under.
func (v *VFS) Name() string { return v.name }

// SyncErr returns the first failed fsync of any file opened through the
// VFS, or nil. Once an fsync has failed, the operating system may have
// dropped the dirty pages it was to write (and cleared the error), so
// nothing written before it can be trusted to be durable: see the
// PostgreSQL "fsyncgate" of 2018.
func (v *VFS) SyncErr() error {
	if p := v.syncErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Corruption returns the first page that failed its checksum on a read
// through the VFS, or nil.
func (v *VFS) Corruption() *CorruptError { return v.corrupt.Load() }

// Close unregisters the VFS. Every database opened through it must be
// closed first: while a file is open, Close returns an error and leaves
// the VFS registered. Close is safe to call twice.
func (v *VFS) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	if n := v.open.Load(); n != 0 {
		return fmt.Errorf("sqlitevfs: close %s: %d files still open", v.name, n)
	}
	v.closed = true
	tls := libc.NewTLS()
	defer tls.Close()
	rc := sqlite3.Xsqlite3_vfs_unregister(tls, v.cvfs)
	vfses.Delete(v.cvfs)
	sqlite3.Xsqlite3_free(tls, v.cvfs)
	libc.Xfree(tls, v.cname)
	if rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlitevfs: unregister %s: SQLite error %d", v.name, rc)
	}
	return nil
}

func (v *VFS) noteSyncErr(err error) { v.syncErr.CompareAndSwap(nil, &err) }

// dbSealed reports whether the database at path is sealed.
func (v *VFS) dbSealed(path string) bool {
	s, _ := v.sealedDBs.Load(path)
	sealed, _ := s.(bool)
	return sealed
}

func (v *VFS) noteCorrupt(e *CorruptError) { v.corrupt.CompareAndSwap(nil, e) }

// ptr turns an address in C memory (libc's heap, or SQLite's own tables)
// into a pointer. Such memory is outside the Go heap, so the garbage
// collector neither moves nor frees it.
func ptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// bytesAt is the n bytes of C memory at p.
func bytesAt(p uintptr, n int32) []byte { return unsafe.Slice((*byte)(ptr(p)), n) }

// cfunc turns a C function pointer (in modernc, the address of a Go func
// value) into a callable Go func of type F.
func cfunc[F any](fp uintptr) F { return *(*F)(unsafe.Pointer(&fp)) }

// setFn stores the Go function f in a C function-pointer slot. Only
// top-level functions are stored: their func values are static, so the
// garbage collector needs no reference to them.
func setFn[F any](slot *uintptr, f F) { *(*F)(unsafe.Pointer(slot)) = f }

func vfsOf(pVfs uintptr) *VFS {
	v, _ := vfses.Load(pVfs)
	return v.(*VFS)
}

func innerVFS(pVfs uintptr) (uintptr, *sqlite3.Tsqlite3_vfs) {
	in := vfsOf(pVfs).inner
	return in, (*sqlite3.Tsqlite3_vfs)(ptr(in))
}

// The signatures of the sqlite3_vfs methods, as modernc calls them.
type (
	openFn        = func(*libc.TLS, uintptr, uintptr, uintptr, int32, uintptr) int32
	deleteFn      = func(*libc.TLS, uintptr, uintptr, int32) int32
	accessFn      = func(*libc.TLS, uintptr, uintptr, int32, uintptr) int32
	fullPathFn    = func(*libc.TLS, uintptr, uintptr, int32, uintptr) int32
	randomnessFn  = func(*libc.TLS, uintptr, int32, uintptr) int32
	sleepFn       = func(*libc.TLS, uintptr, int32) int32
	currentTimeFn = func(*libc.TLS, uintptr, uintptr) int32
	lastErrorFn   = func(*libc.TLS, uintptr, int32, uintptr) int32
)

// durableFlags are the kinds of file whose content must survive a power
// loss, and whose writes a fault plan tracks.
const durableFlags = sqlite3.SQLITE_OPEN_MAIN_DB | sqlite3.SQLITE_OPEN_WAL |
	sqlite3.SQLITE_OPEN_MAIN_JOURNAL | sqlite3.SQLITE_OPEN_SUPER_JOURNAL

func vfsOpen(tls *libc.TLS, pVfs, zName, pFile uintptr, flags int32, pOutFlags uintptr) int32 {
	v := vfsOf(pVfs)
	*(*uintptr)(ptr(pFile)) = 0 // no methods: SQLite will not call xClose on a failed open
	*(*uintptr)(ptr(pFile + handleOffset)) = 0
	if v.faults != nil && v.faults.isOff() {
		return sqlite3.SQLITE_CANTOPEN
	}
	path := ""
	if zName != 0 {
		path = libc.GoString(zName)
	}
	inner := pFile + hdrSize
	in := (*sqlite3.Tsqlite3_vfs)(ptr(v.inner))
	rc := cfunc[openFn](in.FxOpen)(tls, v.inner, zName, inner, flags, pOutFlags)
	im := *(*uintptr)(ptr(inner))
	if rc != sqlite3.SQLITE_OK {
		if im != 0 {
			// The wrapped VFS asks to be closed even after a failed open.
			m := (*sqlite3.Tsqlite3_io_methods)(ptr(im))
			cfunc[closeFn](m.FxClose)(tls, inner)
		}
		return rc
	}
	f := &file{
		v:      v,
		inner:  inner,
		m:      (*sqlite3.Tsqlite3_io_methods)(ptr(im)),
		path:   path,
		mainDB: flags&sqlite3.SQLITE_OPEN_MAIN_DB != 0,
	}
	if flags&sqlite3.SQLITE_OPEN_WAL != 0 && path != "" {
		f.wal = newWALFile(path)
	}
	if v.faults != nil && path != "" && flags&durableFlags != 0 {
		if rc := v.faults.attach(tls, f); rc != sqlite3.SQLITE_OK {
			cfunc[closeFn](f.m.FxClose)(tls, inner)
			return rc
		}
	}
	h := lastHandle.Add(1)
	files.Store(h, f)
	v.open.Add(1)
	*(*uintptr)(ptr(pFile + handleOffset)) = h
	*(*uintptr)(ptr(pFile)) = uintptr(unsafe.Pointer(&ioMethods))
	return sqlite3.SQLITE_OK
}

func vfsDelete(tls *libc.TLS, pVfs, zPath uintptr, dirSync int32) int32 {
	v := vfsOf(pVfs)
	if v.faults != nil {
		if v.faults.isOff() {
			return sqlite3.SQLITE_IOERR_DELETE
		}
		v.faults.forget(libc.GoString(zPath))
	}
	in, vfs := innerVFS(pVfs)
	return cfunc[deleteFn](vfs.FxDelete)(tls, in, zPath, dirSync)
}

func vfsAccess(tls *libc.TLS, pVfs, zPath uintptr, flags int32, pResOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[accessFn](vfs.FxAccess)(tls, in, zPath, flags, pResOut)
}

func vfsFullPathname(tls *libc.TLS, pVfs, zPath uintptr, nOut int32, zOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[fullPathFn](vfs.FxFullPathname)(tls, in, zPath, nOut, zOut)
}

func vfsRandomness(tls *libc.TLS, pVfs uintptr, nByte int32, zOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[randomnessFn](vfs.FxRandomness)(tls, in, nByte, zOut)
}

func vfsSleep(tls *libc.TLS, pVfs uintptr, micros int32) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[sleepFn](vfs.FxSleep)(tls, in, micros)
}

func vfsCurrentTime(tls *libc.TLS, pVfs, pOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[currentTimeFn](vfs.FxCurrentTime)(tls, in, pOut)
}

func vfsGetLastError(tls *libc.TLS, pVfs uintptr, n int32, zOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[lastErrorFn](vfs.FxGetLastError)(tls, in, n, zOut)
}

func vfsCurrentTimeInt64(tls *libc.TLS, pVfs, pOut uintptr) int32 {
	in, vfs := innerVFS(pVfs)
	return cfunc[currentTimeFn](vfs.FxCurrentTimeInt64)(tls, in, pOut)
}
