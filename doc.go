// Package drover is the Go library of Drover, a durable job server: typed
// jobs, workers, retries with backoff, scheduling, priorities, unique jobs
// and dead-lettering, on an embedded store that needs nothing installed.
//
// # Args and workers
//
// A job's args are a struct that encodes to JSON and names its kind:
//
//	type ResizeArgs struct {
//		ImageID string `json:"image_id"`
//		Width   int    `json:"width"`
//	}
//
//	func (ResizeArgs) Kind() string { return "image.resize" }
//
// A Worker[T] works jobs of one args type, with the args decoded:
//
//	workers := drover.NewWorkers()
//	drover.AddWorker(workers, drover.WorkFunc(func(ctx context.Context, j *drover.Job[ResizeArgs]) error {
//		return resize(ctx, j.Args.ImageID, j.Args.Width)
//	}))
//
// Returning nil completes the job. Returning an error fails the attempt:
// the job is retried after a backoff of attempt^4 + 15 seconds (plus up to
// 30% jitter) until MaxAttempts (25 by default) is used up, and then it is
// discarded (the dead-letter set). A worker may instead return Snooze(d)
// (run again later, without using an attempt), Cancel(err) (never run
// again), Discard(err) (dead-letter now) or RetryIn(err, d). A panic fails
// the attempt with its stack in the job's error history.
//
// Each attempt gets a context with its deadline (InsertOpts.Timeout, the
// worker's WorkerOpts.Timeout or Config.JobTimeout) that is cancelled when
// the client stops hard or the job's lease is lost (for example when an
// operator cancels the job). JobFromContext returns the running job.
//
// # Stores
//
// OpenEmbedded opens the embedded store in a directory: a single file
// database (SQLite, in pure Go) that one process owns. Every acknowledged
// write is fsynced before the call returns; concurrent writes share one
// commit, which is what makes durable writes fast.
//
// # Clients
//
// A Client inserts jobs and, when given queues, works them:
//
//	client, err := drover.NewClient(store, &drover.Config{
//		Queues:  map[string]drover.QueueConfig{"default": {MaxWorkers: 50}},
//		Workers: workers,
//	})
//	err = client.Start(ctx)
//	_, err = client.Insert(ctx, ResizeArgs{ImageID: "a1", Width: 640}, nil)
//	...
//	err = client.Stop(shutdownCtx) // finishes running jobs until shutdownCtx ends
//
// Insert options set the queue, priority (1 runs first, 9 last), schedule
// (RunAt or ScheduleIn), attempts, timeout, tags, metadata, dependencies
// and uniqueness. A unique insert whose key is held by a live job returns
// that job with Duplicate set instead of inserting another.
//
// Jobs are leased, not popped: a running job holds a lease that the client
// renews with heartbeats while the worker runs. If the process dies, the
// lease expires and the job is re-delivered to another worker (the expiry
// counts as a failed attempt). Delivery is therefore at least once; make
// workers idempotent.
//
// Unless Config.NoMaintenance is set, a client also runs the background
// services: it promotes scheduled and retryable jobs when they are due,
// rescues expired leases, and prunes finished jobs after their retention.
package drover
