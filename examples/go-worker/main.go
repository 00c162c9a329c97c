// Command go-worker is a Drover worker written with the Go library. Where
// its jobs live is one setting, not code: the same Worker runs in this
// process on the embedded store (a data directory), on PostgreSQL (a
// postgres:// URL), or against a remote `drover serve` over gRPC (an
// http:// or https:// URL), where the server pushes jobs over one Work
// stream per queue and the worker settles them on the same stream.
//
//	go run ./examples/go-worker -target http://127.0.0.1:8080 -enqueue 1000
//	go run ./examples/go-worker -target http://127.0.0.1:8080 -workers 50
//
// It works jobs of kind "demo.resize" from -queue: each takes -work to
// run, and every -fail-every'th attempt fails once (0: never). It stops
// gracefully on SIGINT or SIGTERM, finishing what runs. With -ledger it
// appends one line per finished attempt ("id attempt ok|fail") to a file,
// which the end-to-end tests read.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/droverhq/drover"
)

// ResizeArgs are the args of a demo.resize job.
type ResizeArgs struct {
	Image string `json:"image"`
	Width int    `json:"width"`
}

// Kind routes the job to ResizeWorker.
func (ResizeArgs) Kind() string { return "demo.resize" }

// ResizeWorker "resizes" an image: it waits work and may fail.
type ResizeWorker struct {
	work      time.Duration
	failEvery int64
	attempts  atomic.Int64
	done      atomic.Int64
	ledger    *ledger
}

// Work implements drover.Worker.
func (w *ResizeWorker) Work(ctx context.Context, j *drover.Job[ResizeArgs]) error {
	n := w.attempts.Add(1)
	if w.work > 0 {
		select {
		case <-time.After(w.work):
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	if w.failEvery > 0 && n%w.failEvery == 0 && j.Attempt == 1 {
		w.ledger.add(j.ID, j.Attempt, "fail")
		return drover.RetryIn(fmt.Errorf("image %s: transient failure", j.Args.Image), 0)
	}
	w.ledger.add(j.ID, j.Attempt, "ok")
	w.done.Add(1)
	return nil
}

// ledger appends one line per finished attempt; a nil ledger records
// nothing.
type ledger struct {
	mu sync.Mutex
	f  *os.File
}

func (l *ledger) add(id drover.JobID, attempt int, outcome string) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// One write per line: a kill loses at most the line being written.
	fmt.Fprintf(l.f, "%d %d %s\n", id, attempt, outcome)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go-worker:", err)
		os.Exit(1)
	}
}

func run() error {
	target := flag.String("target", envOr("DROVER_TARGET", "./drover-data"), "where jobs live: a data directory, a postgres:// URL or a server's http(s):// URL (env DROVER_TARGET)")
	token := flag.String("token", os.Getenv("DROVER_TOKEN"), "bearer token for a remote server (env DROVER_TOKEN)")
	queue := flag.String("queue", "default", "queue to work")
	workers := flag.Int("workers", 20, "jobs worked at once")
	leaseFor := flag.Duration("lease-for", 30*time.Second, "lease length; a killed worker's jobs come back this long after its last heartbeat")
	work := flag.Duration("work", 10*time.Millisecond, "how long each job takes")
	failEvery := flag.Int64("fail-every", 0, "fail the first attempt of every n-th job worked (0: never)")
	enqueue := flag.Int("enqueue", 0, "enqueue this many jobs and exit, instead of working")
	ledgerPath := flag.String("ledger", "", "append one line per finished attempt to this file")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := drover.Open(ctx, *target, &drover.OpenOptions{Remote: &drover.RemoteOptions{Token: *token, Logger: log}})
	if err != nil {
		return err
	}
	defer st.Close()

	if *enqueue > 0 {
		return insert(ctx, st, *queue, *enqueue, log)
	}

	w := &ResizeWorker{work: *work, failEvery: *failEvery}
	if *ledgerPath != "" {
		f, err := os.OpenFile(*ledgerPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		w.ledger = &ledger{f: f}
	}
	ws := drover.NewWorkers()
	drover.AddWorker(ws, w)
	c, err := drover.NewClient(st, &drover.Config{
		Queues:   map[string]drover.QueueConfig{*queue: {MaxWorkers: *workers}},
		Workers:  ws,
		LeaseFor: *leaseFor,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	if err := c.Start(ctx); err != nil {
		return err
	}
	log.Info("working", "target", *target, "queue", *queue, "workers", *workers)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
			log.Info("progress", "attempts", w.attempts.Load(), "completed", w.done.Load())
		}
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = c.Stop(stopCtx)
	log.Info("stopped", "attempts", w.attempts.Load(), "completed", w.done.Load())
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("stop: jobs still running after 30s were handed back: %w", err)
	}
	return err
}

// insert enqueues n jobs in batches of 1,000.
func insert(ctx context.Context, st *drover.Store, queue string, n int, log *slog.Logger) error {
	c, err := drover.NewClient(st, &drover.Config{Logger: log, NoMaintenance: true})
	if err != nil {
		return err
	}
	for done := 0; done < n; {
		batch := make([]drover.InsertManyParams, min(1000, n-done))
		for i := range batch {
			batch[i] = drover.InsertManyParams{
				Args: ResizeArgs{Image: fmt.Sprintf("img-%06d.png", done+i), Width: 128},
				Opts: &drover.InsertOpts{Queue: queue},
			}
		}
		if _, err := c.InsertMany(ctx, batch); err != nil {
			return err
		}
		done += len(batch)
	}
	log.Info("enqueued", "jobs", n, "queue", queue)
	return nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
