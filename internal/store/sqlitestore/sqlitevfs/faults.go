package sqlitevfs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// BlockSize is the unit in which a simulated power loss keeps or drops
// unsynced writes: an operating system page-cache page.
const BlockSize = 4096

// Faults is a fault plan: a simulated disk under the files of a VFS made
// with it. It counts fsyncs and written bytes across all the files, fails
// the fsync it is told to, refuses writes past a space budget, and records
// for each durable file (database, WAL, journals) the content it had at
// its last successful fsync, so that PowerLoss can put that content back.
//
// After a failed fsync the plan behaves as Linux does since 4.13: the
// pages that fsync was to write stay in the page cache, marked clean, and
// are lost at a power loss even if a later fsync of the file succeeds,
// unless they were written again in between.
//
// With a plan the VFS never calls the real fsync: what is durable is what
// the plan says. A Faults is safe for concurrent use.
type Faults struct {
	mu         sync.Mutex
	syncs      int
	failAt     int // the sync that fails; 0 for none
	written    int64
	writes     map[string]int // write calls, by file name suffix ("", "-wal", ...)
	space      int64          // bytes that may still be written; negative: no limit
	full       int            // writes refused for space
	off        bool
	open       int // files open that the plan tracks
	tracks     map[string]*track
	beforeSync func(n int)
}

// track is what the plan knows of one durable file, by path.
type track struct {
	// synced is the file's size at its last successful fsync.
	synced int64
	// dirty holds, for each block written since the last successful
	// fsync, its content at that fsync (only the part below synced).
	dirty map[int64][]byte
	// lost holds the blocks whose write-back a failed fsync gave up: the
	// disk still has this content, whatever later fsyncs say.
	lost map[int64][]byte
}

// NewFaults returns a plan that injects nothing until told to.
func NewFaults() *Faults {
	return &Faults{space: -1, tracks: map[string]*track{}, writes: map[string]int{}}
}

// Writes returns how many write calls reached files whose names end in
// suffix ("-wal" for WAL files).
func (p *Faults) Writes(suffix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.writes[suffix]
}

// FailSync makes the n-th fsync from now (n >= 1) fail with
// SQLITE_IOERR_FSYNC.
func (p *Faults) FailSync(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.failAt = p.syncs + n
}

// Syncs returns how many fsyncs the files asked for, failed ones included.
func (p *Faults) Syncs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncs
}

// SetSpace lets n more bytes be written: a write past them writes what
// fits and fails with SQLITE_FULL, as a full disk does. A negative n
// removes the limit ("space returns").
func (p *Faults) SetSpace(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.space = n
}

// Written returns how many bytes the files have written.
func (p *Faults) Written() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.written
}

// FullWrites returns how many writes failed for lack of space.
func (p *Faults) FullWrites() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.full
}

// BeforeSync sets a function called with the number of each fsync before
// its outcome is decided, on the goroutine of the connection that asked
// for it. It may block, to hold the writer inside its commit.
func (p *Faults) BeforeSync(hook func(n int)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.beforeSync = hook
}

// CutPower makes every later read, write, truncate, fsync, open and delete
// fail with an I/O error, as if the machine lost power: nothing more
// reaches the disk. Locks and closes still work, so the database can be
// closed before PowerLoss.
func (p *Faults) CutPower() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.off = true
}

// LossMode says which unsynced writes a power loss drops.
type LossMode int

const (
	// DropUnsynced loses every write since each file's last successful
	// fsync, and the file's growth since then.
	DropUnsynced LossMode = iota
	// TearUnsynced keeps or loses each unsynced block at random, as a
	// disk that wrote back part of its cache does; a file that grew
	// keeps its new size or not, its new blocks written or zero.
	TearUnsynced
)

// PowerLoss puts back, in every file the plan tracks, the content of the
// disk after a power loss: writes that no fsync covered are dropped as
// mode says (rng chooses for TearUnsynced; it may be nil for
// DropUnsynced). The power must have been cut (CutPower) and every file
// closed. Afterwards the plan is fresh: power on, no fault pending, no
// space limit, nothing tracked.
func (p *Faults) PowerLoss(mode LossMode, rng *rand.Rand) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.off {
		return errors.New("sqlitevfs: PowerLoss before CutPower")
	}
	if p.open > 0 {
		return fmt.Errorf("sqlitevfs: PowerLoss with %d files still open", p.open)
	}
	if mode == TearUnsynced && rng == nil {
		return errors.New("sqlitevfs: TearUnsynced needs a random source")
	}
	for _, path := range slices.Sorted(maps.Keys(p.tracks)) {
		if err := p.tracks[path].restore(path, mode, rng); err != nil {
			return err
		}
	}
	p.off = false
	p.failAt = 0
	p.space = -1
	p.tracks = map[string]*track{}
	return nil
}

func (p *Faults) isOff() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.off
}

// attach starts (or joins) the record of f's path. A file first seen is
// taken as durable as it is.
func (p *Faults) attach(tls *libc.TLS, f *file) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tracks[f.path]
	if t == nil {
		size, rc := f.size(tls)
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		t = &track{synced: size, dirty: map[int64][]byte{}, lost: map[int64][]byte{}}
		p.tracks[f.path] = t
	}
	f.track = t
	p.open++
	return sqlite3.SQLITE_OK
}

func (p *Faults) detach() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.open--
}

// forget drops the record of a deleted file: an unlink is taken as
// durable at once.
func (p *Faults) forget(path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tracks, path)
}

func (p *Faults) write(tls *libc.TLS, f *file, zBuf uintptr, n int32, off int64) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off {
		return sqlite3.SQLITE_IOERR_WRITE
	}
	full := false
	if p.space >= 0 && int64(n) > p.space {
		n, full = int32(p.space), true //nolint:gosec // G115: p.space < n, an int32
		p.full++
	}
	p.writes[fileSuffix(f.path)]++
	if n > 0 {
		if f.track != nil {
			if rc := f.track.save(tls, f, off, int64(n)); rc != sqlite3.SQLITE_OK {
				return rc
			}
		}
		if rc := f.writeAt(tls, zBuf, n, off); rc != sqlite3.SQLITE_OK {
			return rc
		}
		p.written += int64(n)
		if p.space >= 0 {
			p.space -= int64(n)
		}
	}
	if full {
		return sqlite3.SQLITE_FULL
	}
	return sqlite3.SQLITE_OK
}

func (p *Faults) truncate(tls *libc.TLS, f *file, size int64) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off {
		return sqlite3.SQLITE_IOERR_TRUNCATE
	}
	if t := f.track; t != nil {
		cur, rc := f.size(tls)
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		if end := min(cur, t.synced); size < end {
			if rc := t.save(tls, f, size, end-size); rc != sqlite3.SQLITE_OK {
				return rc
			}
		}
	}
	return cfunc[truncateFn](f.m.FxTruncate)(tls, f.inner, size)
}

func (p *Faults) sync(tls *libc.TLS, f *file) int32 {
	p.mu.Lock()
	p.syncs++
	n, hook := p.syncs, p.beforeSync
	p.mu.Unlock()
	if hook != nil {
		hook(n)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.off {
		return sqlite3.SQLITE_IOERR_FSYNC
	}
	t := f.track
	if n == p.failAt {
		if t != nil {
			maps.Copy(t.lost, t.dirty)
			clear(t.dirty)
		}
		return sqlite3.SQLITE_IOERR_FSYNC
	}
	if t != nil {
		size, rc := f.size(tls)
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		t.synced = size
		clear(t.dirty)
	}
	return sqlite3.SQLITE_OK
}

// save records, before a write or truncate of [off, off+n), the content
// at the last fsync of each block in that range that is not recorded yet.
func (t *track) save(tls *libc.TLS, f *file, off, n int64) int32 {
	for b := off / BlockSize; b <= (off+n-1)/BlockSize; b++ {
		start := b * BlockSize
		if start >= t.synced {
			break
		}
		if _, ok := t.dirty[b]; ok {
			continue
		}
		if old, ok := t.lost[b]; ok {
			// Written again: the next fsync writes the whole page back.
			t.dirty[b] = old
			delete(t.lost, b)
			continue
		}
		old, rc := f.readAt(tls, start, int32(min(BlockSize, t.synced-start))) //nolint:gosec // G115: at most BlockSize
		if rc != sqlite3.SQLITE_OK {
			return rc
		}
		t.dirty[b] = old
	}
	return sqlite3.SQLITE_OK
}

// restore applies a power loss to the file at path.
func (t *track) restore(path string, mode LossMode, rng *rand.Rand) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	for _, b := range slices.Sorted(maps.Keys(t.lost)) {
		if _, err := f.WriteAt(t.lost[b], b*BlockSize); err != nil {
			return err
		}
	}
	for _, b := range slices.Sorted(maps.Keys(t.dirty)) {
		if mode == TearUnsynced && rng.IntN(2) == 0 {
			continue // this block reached the disk
		}
		if _, err := f.WriteAt(t.dirty[b], b*BlockSize); err != nil {
			return err
		}
	}
	size := t.synced
	if cur := fi.Size(); mode == TearUnsynced && cur > t.synced && rng.IntN(2) == 0 {
		size = cur
		zero := make([]byte, BlockSize)
		for start := t.synced; start < cur; {
			end := min((start/BlockSize+1)*BlockSize, cur)
			if rng.IntN(2) == 0 {
				if _, err := f.WriteAt(zero[:end-start], start); err != nil {
					return err
				}
			}
			start = end
		}
	}
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Close()
}

// fileSuffix is what follows the database's name in path: "-wal",
// "-journal", "-shm", or "" for the database itself.
func fileSuffix(path string) string {
	for _, s := range []string{"-wal", "-journal", "-shm"} {
		if strings.HasSuffix(path, s) {
			return s
		}
	}
	return ""
}
