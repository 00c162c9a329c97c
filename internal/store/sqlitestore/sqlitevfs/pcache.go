package sqlitevfs

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// This file works around a cost in SQLite's default page cache (pcache1)
// that a busy job store meets on every commit.
//
// When a B-tree page splits, balance_nonroot puts the new pages in
// ascending order by swapping page numbers through a temporary one: the
// "lock-byte page" at 1 GiB (page 262,145 with 4 KiB pages), which no
// database below 1 GiB uses. pcache1's rekey raises the cache's largest
// key (iMaxKey) to that number and never lowers it. At the end of every
// write transaction the pager truncates the cache to the database's size,
// and pcache1 decides how to find the pages past it from the gap between
// iMaxKey and the new size: a small gap scans the few hash buckets those
// pages can be in, a gap wider than the hash table scans every bucket.
// After a swap the gap is about a quarter of a million pages, so the
// commit walks the writer's whole hash table (8,192 buckets and every
// page in them for a 32 MiB cache) to remove nothing. In the job store's
// drain that was a sixth of all CPU.
//
// The temporary number is only held inside one balance_nonroot call: the
// page is renamed to the temporary number and, two renames later, to its
// final one, which was already a key in the cache. So the wrapper below
// restores iMaxKey after a rename to the lock-byte page, keeping it the
// true largest key once the swap completes; pcache1 is otherwise
// untouched. It is installed with sqlite3_config before SQLite
// initializes, so it must run in this package's init, before any
// database opens.

// pendingByte is SQLite's PENDING_BYTE: the lock-byte page holds it.
// SQLite lets only its own test builds move it.
const pendingByte = 0x40000000

type (
	pcacheRekeyFn    = func(*libc.TLS, uintptr, uintptr, uint32, uint32)
	pcacheTruncateFn = func(*libc.TLS, uintptr, uint32)
)

var (
	pcacheOrigRekey    pcacheRekeyFn
	pcacheOrigTruncate pcacheTruncateFn
	// pcacheFix switches the correction on; tests turn it off to show
	// the cost it removes.
	pcacheFix atomic.Bool
	// pcacheFullScans counts truncations that had to walk a whole hash
	// table.
	pcacheFullScans  atomic.Int64
	errPcacheInstall error
)

func init() { errPcacheInstall = installPageCacheFix() }

func installPageCacheFix() error {
	tls := libc.NewTLS()
	defer tls.Close()
	size := unsafe.Sizeof(sqlite3.Tsqlite3_pcache_methods2{})
	m := libc.Xmalloc(tls, libc.Tsize_t(size))
	if m == 0 {
		return fmt.Errorf("sqlitevfs: page cache: out of memory")
	}
	defer libc.Xfree(tls, m)
	if rc := config(tls, sqlite3.SQLITE_CONFIG_GETPCACHE2, m); rc != sqlite3.SQLITE_OK {
		return fmt.Errorf("sqlitevfs: page cache: get methods: SQLite error %d", rc)
	}
	methods := (*sqlite3.Tsqlite3_pcache_methods2)(ptr(m))
	if methods.FpArg != 0 || methods.FxRekey == 0 || methods.FxTruncate == 0 {
		// Not pcache1: someone installed their own cache first.
		return fmt.Errorf("sqlitevfs: page cache: not SQLite's default cache")
	}
	pcacheOrigRekey = cfunc[pcacheRekeyFn](methods.FxRekey)
	pcacheOrigTruncate = cfunc[pcacheTruncateFn](methods.FxTruncate)
	setFn(&methods.FxRekey, pcacheRekey)
	setFn(&methods.FxTruncate, pcacheTruncate)
	if rc := config(tls, sqlite3.SQLITE_CONFIG_PCACHE2, m); rc != sqlite3.SQLITE_OK {
		// SQLite was initialized before this package: leave it alone.
		return fmt.Errorf("sqlitevfs: page cache: install: SQLite error %d", rc)
	}
	pcacheFix.Store(true)
	return nil
}

// config calls sqlite3_config(op, p) with one pointer argument.
func config(tls *libc.TLS, op int32, p uintptr) int32 {
	va := libc.NewVaList(p)
	defer libc.Xfree(tls, va)
	return sqlite3.Xsqlite3_config(tls, op, va)
}

// PageCacheFixErr reports why the page-cache correction above could not
// be installed, or nil when it is in place. Without it SQLite works the
// same, only slower on large caches.
func PageCacheFixErr() error { return errPcacheInstall }

// PageCacheFullScans returns how many cache truncations, process-wide,
// have walked a whole page-cache hash table.
func PageCacheFullScans() int64 { return pcacheFullScans.Load() }

func pcacheRekey(tls *libc.TLS, p, pPg uintptr, iOld, iNew uint32) {
	c := (*sqlite3.TPCache1)(ptr(p))
	before := c.FiMaxKey
	pcacheOrigRekey(tls, p, pPg, iOld, iNew)
	if iNew > before && c.FszPage > 0 && iNew == pendingByte/uint32(c.FszPage)+1 && pcacheFix.Load() {
		// Only the page being swapped holds this key, and only until
		// balance_nonroot renames it to a key at most before. The
		// group's mutex is the one pcache1 holds for the field.
		mu := (*sqlite3.TPGroup)(ptr(c.FpGroup)).Fmutex
		sqlite3.Xsqlite3_mutex_enter(tls, mu)
		c.FiMaxKey = before
		sqlite3.Xsqlite3_mutex_leave(tls, mu)
	}
}

func pcacheTruncate(tls *libc.TLS, p uintptr, iLimit uint32) {
	c := (*sqlite3.TPCache1)(ptr(p))
	if iLimit <= c.FiMaxKey && c.FiMaxKey-iLimit >= c.FnHash {
		pcacheFullScans.Add(1)
	}
	pcacheOrigTruncate(tls, p, iLimit)
}
