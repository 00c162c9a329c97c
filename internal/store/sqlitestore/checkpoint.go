package sqlitestore

import (
	"context"
	"database/sql"
	"net/url"
	"time"
)

// Checkpoints off the commit path.
//
// In WAL mode every commit appends pages to the WAL, and a checkpoint
// copies them back into the database file and fsyncs it. Left to SQLite,
// the commit that takes the WAL past CheckpointPages runs the whole
// checkpoint inline: about 1,000 pages copied and an fsync of the
// database file, while every request in that commit group (and every one
// queued behind it) waits. Under a steady trickle of jobs that is a stall
// of several milliseconds every tenth of a second, and it was most of the
// enqueue-to-start tail.
//
// So a second connection checkpoints in the background (PASSIVE: it never
// waits for, nor blocks, the writer or the readers), at most every
// CheckpointEvery while commits arrive. The writer keeps SQLite's own
// checkpoint as the backstop that restarts the WAL from its beginning (a
// WAL only restarts when it was wholly copied as a writer begins): when it
// runs, the background has already copied and synced nearly every page, so
// it has only the last few to copy.

// checkpointer is the background checkpoint loop; it runs until s.quit.
func (s *Store) checkpointer(db *sql.DB) {
	defer close(s.ckDone)
	defer db.Close()
	ctx := context.Background()
	every := s.opts.CheckpointEvery
	var last time.Time
	for {
		select {
		case <-s.quit:
			return
		case <-s.ckKick:
		}
		if wait := every - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-s.quit:
				t.Stop()
				return
			case <-t.C:
			}
		}
		last = time.Now()
		var busy, logPages, copied int
		err := db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &logPages, &copied)
		if err != nil {
			// The writer meets the same disk and reports it; a failed
			// background pass only leaves more for the next one.
			s.opts.Logger.Debug("background checkpoint failed", "err", err)
			continue
		}
		s.checkpoints.Add(1)
	}
}

// openCheckpointer opens the background checkpoint connection for the
// database at path and starts its loop.
func (s *Store) openCheckpointer(path, sync string) error {
	if s.opts.CheckpointEvery < 0 {
		return nil
	}
	q := url.Values{}
	q.Set("vfs", s.vfs.Name())
	// The checkpoint syncs the database file before it lets the WAL be
	// reused, by this connection's synchronous setting.
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "cache_size(-1024)")
	db, err := sql.Open("sqlite", fileURI(path, q))
	if err != nil {
		return err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	if err := db.PingContext(context.Background()); err != nil {
		db.Close()
		return err
	}
	s.ckKick = make(chan struct{}, 1)
	s.ckDone = make(chan struct{})
	go s.checkpointer(db)
	return nil
}

// kickCheckpointer tells the background checkpointer that the WAL grew.
func (s *Store) kickCheckpointer() {
	if s.ckKick == nil {
		return
	}
	select {
	case s.ckKick <- struct{}{}:
	default:
	}
}
