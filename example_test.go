package drover_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover"
)

// SendEmailArgs are the args of an example job.
type SendEmailArgs struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

func (SendEmailArgs) Kind() string { return "email.send" }

// quietLogger keeps the examples' output to what they print.
var quietLogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// Insert a job, work it with a typed worker, and stop gracefully.
func Example() {
	dir, _ := os.MkdirTemp("", "drover-example")
	defer os.RemoveAll(dir)
	store, err := drover.OpenEmbedded(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	done := make(chan struct{})
	workers := drover.NewWorkers()
	drover.AddWorker(workers, drover.WorkFunc(func(ctx context.Context, j *drover.Job[SendEmailArgs]) error {
		fmt.Printf("sending %q to %s (attempt %d)\n", j.Args.Subject, j.Args.To, j.Attempt)
		close(done)
		return nil
	}))
	client, err := drover.NewClient(store, &drover.Config{
		Queues:  map[string]drover.QueueConfig{"default": {MaxWorkers: 10}},
		Workers: workers,
		Logger:  quietLogger,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := client.Insert(ctx, SendEmailArgs{To: "ada@example.com", Subject: "hello"}, nil); err != nil {
		log.Fatal(err)
	}
	<-done
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := client.Stop(stopCtx); err != nil {
		log.Fatal(err)
	}
	// Output: sending "hello" to ada@example.com (attempt 1)
}

// A unique job: the second insert finds the first and inserts nothing.
func ExampleClient_Insert_unique() {
	dir, _ := os.MkdirTemp("", "drover-example")
	defer os.RemoveAll(dir)
	store, err := drover.OpenEmbedded(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	client, err := drover.NewClient(store, &drover.Config{Logger: quietLogger})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	opts := &drover.InsertOpts{Unique: &drover.UniqueOpts{Key: "welcome:42"}}
	first, err := client.Insert(ctx, SendEmailArgs{To: "u42@example.com", Subject: "welcome"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	second, err := client.Insert(ctx, SendEmailArgs{To: "u42@example.com", Subject: "welcome"}, opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(first.Duplicate, second.Duplicate, first.Job.ID == second.Job.ID)
	// Output: false true true
}

// Schedule a job for later, at a lower priority, in its own queue.
func ExampleClient_Insert_scheduled() {
	dir, _ := os.MkdirTemp("", "drover-example")
	defer os.RemoveAll(dir)
	store, err := drover.OpenEmbedded(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	client, err := drover.NewClient(store, &drover.Config{Logger: quietLogger})
	if err != nil {
		log.Fatal(err)
	}
	res, err := client.Insert(context.Background(), SendEmailArgs{To: "b@example.com", Subject: "reminder"},
		&drover.InsertOpts{Queue: "reminders", Priority: 7, ScheduleIn: time.Hour, Tags: []string{"reminder"}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Job.State, res.Job.Queue, res.Job.Priority)
	// Output: scheduled reminders 7
}

// Workers decide a job's fate with their error: Discard dead-letters it
// now, Snooze runs it later without using an attempt, and any other error
// is retried with backoff.
func ExampleDiscard() {
	dir, _ := os.MkdirTemp("", "drover-example")
	defer os.RemoveAll(dir)
	store, err := drover.OpenEmbedded(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	done := make(chan struct{})
	workers := drover.NewWorkers()
	drover.AddWorker(workers, drover.WorkFunc(func(ctx context.Context, j *drover.Job[SendEmailArgs]) error {
		defer close(done)
		if j.Args.To == "" {
			return drover.Discard(errors.New("no recipient"))
		}
		return nil
	}))
	client, err := drover.NewClient(store, &drover.Config{
		Queues: map[string]drover.QueueConfig{"default": {}}, Workers: workers, Logger: quietLogger,
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	if err := client.Start(ctx); err != nil {
		log.Fatal(err)
	}
	res, err := client.Insert(ctx, SendEmailArgs{Subject: "lost"}, nil)
	if err != nil {
		log.Fatal(err)
	}
	<-done
	if err := client.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	j, err := client.Get(ctx, res.Job.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(j.State, j.Errors[0].Message)
	// Output: discarded discard: no recipient
}

// Enqueue a job in the same transaction as the application's own write:
// the job exists exactly when the order does. (Not run by go test: it
// needs a PostgreSQL database.)
func ExampleClient_InsertTx() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := drover.NewPostgres(ctx, pool, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	client, err := drover.NewClient(store, nil)
	if err != nil {
		log.Fatal(err)
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, `INSERT INTO orders (customer) VALUES ($1)`, "ada@example.com"); err != nil {
		log.Fatal(err)
	}
	if _, err := client.InsertTx(ctx, tx, SendEmailArgs{To: "ada@example.com", Subject: "Your order"}, nil); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
}
