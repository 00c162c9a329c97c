package main

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// The job states this benchmark moves jobs through.
const (
	stAvailable = "available"
	stRunning   = "running"
	stCompleted = "completed"
)

// NewJob is one job to insert, always in state available.
type NewJob struct {
	Queue       string
	Kind        string
	Priority    int64
	ScheduledAt int64 // Unix µs
	CreatedAt   int64 // Unix µs
	MaxAttempts int64
	Args        []byte
}

// Leased is a job taken by Lease.
type Leased struct {
	ID    int64
	Token string
}

// Tx is what one request may do inside a (group) transaction. Every
// engine implements the same job-queue shape behind it.
type Tx interface {
	// Insert adds an available job and returns its id (ids increase).
	Insert(j *NewJob) (int64, error)
	// Lease takes the first limit available jobs of queue in fetch order
	// (priority, scheduled_at, id), marks them running with a fresh token
	// and returns them.
	Lease(queue string, limit int, now, expires int64, worker string) ([]Leased, error)
	// Complete marks a running job completed if token matches; it reports
	// whether it did.
	Complete(id int64, token string, now int64) (bool, error)
	// Savepoint and Release bracket one request inside a group transaction
	// (SQLite: SAVEPOINT / RELEASE, as Drover's writer does; the key-value
	// engines have no equivalent and do nothing).
	Savepoint() error
	Release(rollback bool) error
}

// Engine is one embedded store opened on a directory.
type Engine interface {
	// Update runs fn in one transaction and returns once it is durable
	// (fsynced) or failed.
	Update(fn func(Tx) error) error
	Close() error
}

type engineOpts struct {
	boltFreelist string
	boltFill     float64
	lean         bool // the lean index set: fetch and state (other than available) only
	sqliteCache  int  // MiB
}

func openEngine(name, dir string, o engineOpts) (Engine, error) {
	switch name {
	case "sqlite":
		return openSQLite(dir, o)
	case "bbolt":
		return openBolt(dir, o)
	case "pebble":
		return openPebble(dir, o)
	}
	return nil, fmt.Errorf("unknown engine %q (want sqlite, bbolt or pebble)", name)
}

// dirSize is the sum of the sizes of the regular files under dir.
func dirSize(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	return total, err
}

func newToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// ---- the record and index keys of the key-value engines ----

// rec is a job row for the key-value engines: the same fields as the
// SQLite jobs table that the hot paths touch.
type rec struct {
	State          string
	Queue          string
	Kind           string
	Priority       int64
	ScheduledAt    int64
	Args           []byte
	Attempt        int64
	MaxAttempts    int64
	TimeoutUS      int64
	CreatedAt      int64
	AttemptedAt    int64
	FinalizedAt    int64
	AttemptedBy    string
	LeaseToken     string
	LeaseExpiresAt int64
	Settled        string
	Output         []byte
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func (r *rec) encode() []byte {
	b := make([]byte, 0, 96+len(r.Args)+len(r.Queue)+len(r.Kind)+len(r.AttemptedBy)+len(r.LeaseToken)+len(r.Output))
	b = append(b, 1) // format version
	b = appendStr(b, r.State)
	b = appendStr(b, r.Queue)
	b = appendStr(b, r.Kind)
	for _, v := range []int64{r.Priority, r.ScheduledAt, r.Attempt, r.MaxAttempts, r.TimeoutUS,
		r.CreatedAt, r.AttemptedAt, r.FinalizedAt, r.LeaseExpiresAt} {
		b = binary.AppendVarint(b, v)
	}
	b = appendBytes(b, r.Args)
	b = appendStr(b, r.AttemptedBy)
	b = appendStr(b, r.LeaseToken)
	b = appendStr(b, r.Settled)
	b = appendBytes(b, r.Output)
	return b
}

var errCorrupt = errors.New("corrupt record")

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = errCorrupt
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || uint64(len(d.b)) < n {
		d.err = errCorrupt
		return nil
	}
	out := append([]byte(nil), d.b[:n]...) // copy: the source may be an mmap
	d.b = d.b[n:]
	return out
}

func (d *decoder) str() string { return string(d.bytes()) }

func decodeRec(b []byte) (*rec, error) {
	if len(b) == 0 || b[0] != 1 {
		return nil, errCorrupt
	}
	d := &decoder{b: b[1:]}
	r := &rec{}
	r.State = d.str()
	r.Queue = d.str()
	r.Kind = d.str()
	for _, p := range []*int64{&r.Priority, &r.ScheduledAt, &r.Attempt, &r.MaxAttempts, &r.TimeoutUS,
		&r.CreatedAt, &r.AttemptedAt, &r.FinalizedAt, &r.LeaseExpiresAt} {
		*p = d.varint()
	}
	r.Args = d.bytes()
	r.AttemptedBy = d.str()
	r.LeaseToken = d.str()
	r.Settled = d.str()
	r.Output = d.bytes()
	return r, d.err
}

// be64 appends v as 8 big-endian bytes, with the sign bit flipped so that
// signed values sort in numeric order.
func be64(b []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(b, uint64(v)^(1<<63))
}

func idFromTail(k []byte) int64 {
	return int64(binary.BigEndian.Uint64(k[len(k)-8:]) ^ (1 << 63))
}

// The secondary indexes, as in the SQLite schema:
//
//	fetch:     queue 0x00 priority scheduled_at id   (available jobs only)
//	running:   lease_expires_at id                   (running jobs only)
//	state:     state 0x00 id                         (every job)
//	finalized: finalized_at id                       (finalized jobs only)
//
// Each key-value engine stores them under its own prefix or bucket. With
// the lean index set (-indexes lean) only fetch and state are kept, and
// state leaves out available jobs, as the partial index
// jobs_state ... WHERE state <> 'available' does.
func fetchPrefix(b []byte, queue string) []byte {
	b = append(b, queue...)
	return append(b, 0)
}

func fetchKey(b []byte, queue string, prio, sched, id int64) []byte {
	b = fetchPrefix(b, queue)
	b = be64(b, prio)
	b = be64(b, sched)
	return be64(b, id)
}

func runningKey(b []byte, exp, id int64) []byte { return be64(be64(b, exp), id) }

func stateKey(b []byte, state string, id int64) []byte {
	b = append(b, state...)
	b = append(b, 0)
	return be64(b, id)
}

func finalKey(b []byte, fin, id int64) []byte { return be64(be64(b, fin), id) }

func newRec(j *NewJob) *rec {
	return &rec{
		State:       stAvailable,
		Queue:       j.Queue,
		Kind:        j.Kind,
		Priority:    j.Priority,
		ScheduledAt: j.ScheduledAt,
		Args:        j.Args,
		MaxAttempts: j.MaxAttempts,
		CreatedAt:   j.CreatedAt,
	}
}
