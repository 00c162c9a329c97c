package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/restclient"
)

// newRESTClient returns a client whose connection pool keeps a connection
// per concurrent caller, so the figures measure the server rather than
// TCP handshakes. It sends no idempotency keys and repeats nothing, so
// the figures measure the plain insert path and a failure is not hidden.
func newRESTClient(server, token string) (*restclient.Client, error) {
	return restclient.NewWithOpts(server, token, benchHTTPClient(),
		restclient.Opts{NoIdempotencyKeys: true, Retries: -1})
}

// benchHTTPClient is the HTTP client of the REST workloads and of C2.
func benchHTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 512
	tr.MaxIdleConnsPerHost = 512
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

func (r *runner) request(i int) httpapi.EnqueueRequest {
	b, _ := json.Marshal(newArgs(i))
	return httpapi.EnqueueRequest{Kind: Args{}.Kind(), Queue: r.queue, Args: b}
}

func restW1(ctx context.Context, r *runner) (Result, error) {
	n := r.scaled(100_000)
	var inserted atomic.Int64
	stop := r.ticker("inserted", func() int { return int(inserted.Load()) }, n)
	defer stop()
	start := time.Now()
	if err := r.restFill(ctx, n, &inserted); err != nil {
		return Result{}, err
	}
	return Result{Jobs: n, Seconds: time.Since(start).Seconds()}, nil
}

// restFill enqueues n jobs into the run's queue in batches of 1,000.
func (r *runner) restFill(ctx context.Context, n int, inserted *atomic.Int64) error {
	for done := 0; done < n; {
		k := min(1000, n-done)
		reqs := make([]httpapi.EnqueueRequest, k)
		for i := range reqs {
			reqs[i] = r.request(done + i)
		}
		if _, err := r.api.EnqueueBatch(ctx, reqs); err != nil {
			return err
		}
		done += k
		inserted.Add(int64(k))
	}
	return nil
}

func restW2(ctx context.Context, r *runner) (Result, error) {
	res, err := r.closedLoop(r.scaled(20_000), "inserted", func(i int) error {
		_, _, err := r.api.EnqueueID(ctx, r.request(i))
		return err
	})
	res.Note = "over REST, one connection per client"
	return res, err
}

// restWorker is an HTTP worker loop: lease up to max jobs (long-polling
// up to wait), call onJob for each, complete each. It stops when ctx ends.
func (r *runner) restWorker(ctx context.Context, max int, wait time.Duration, onJob func(httpapi.Job), onDone func()) error {
	w := httpapi.Duration(wait)
	lf := httpapi.Duration(30 * time.Second)
	for ctx.Err() == nil {
		jobs, err := r.lease(ctx, max, &w, &lf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, j := range jobs {
			if onJob != nil {
				onJob(j)
			}
			if err := r.complete(ctx, j); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if onDone != nil {
				onDone()
			}
		}
	}
	return nil
}

func (r *runner) lease(ctx context.Context, max int, wait, leaseFor *httpapi.Duration) ([]httpapi.Job, error) {
	return r.api.Lease(ctx, restclient.LeaseRequest{Queues: []string{r.queue}, Max: max, Wait: wait, LeaseFor: leaseFor, Worker: "drover-bench"})
}

func (r *runner) complete(ctx context.Context, j httpapi.Job) error {
	_, err := r.api.Complete(ctx, j.ID, j.LeaseToken, nil)
	return err
}

func restW3(ctx context.Context, r *runner) (Result, error) {
	n := r.scaled(100_000)
	var inserted atomic.Int64
	stopFill := r.ticker("filling", func() int { return int(inserted.Load()) }, n)
	err := r.restFill(ctx, n, &inserted)
	stopFill()
	if err != nil {
		return Result{}, err
	}
	var worked atomic.Int64
	all := make(chan struct{})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := r.ticker("worked", func() int { return int(worked.Load()) }, n)
	start := time.Now()
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	var closeAll sync.Once
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- r.restWorker(wctx, 1, time.Second, func(httpapi.Job) {}, func() {
				// A 200 to a complete is the server's durable
				// acknowledgement: count those. (Polling the queue's
				// counts instead would measure GET /v1/queues too, which
				// on PostgreSQL counts the whole table.)
				if worked.Add(1) == int64(n) {
					closeAll.Do(func() { close(all) })
				}
			})
		}()
	}
	var werr error
	select {
	case <-all:
	case werr = <-errs:
		if werr == nil {
			werr = errors.New("a worker stopped early")
		}
	case <-ctx.Done():
		werr = ctx.Err()
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()
	stop()
	return Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "100 HTTP workers, each leasing and completing one job at a time"}, werr
}

func restW4(ctx context.Context, r *runner) (Result, error) {
	dur := max(time.Duration(float64(10*time.Second)*r.cfg.Scale), time.Second)
	n := int(dur / time.Millisecond)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	var started, completed atomic.Int64
	all := make(chan struct{})
	settled := make(chan struct{})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	werrs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			werrs <- r.restWorker(wctx, 1, 5*time.Second, func(j httpapi.Job) {
				var a Args
				if json.Unmarshal(j.Args, &a) == nil && a.Sent > 0 {
					mu.Lock()
					lat = append(lat, time.Duration(time.Now().UnixNano()-a.Sent))
					mu.Unlock()
				}
				if int(started.Add(1)) == n {
					close(all)
				}
			}, func() {
				if int(completed.Add(1)) == n {
					close(settled)
				}
			})
		}()
	}
	stop := r.ticker("started", func() int { return int(started.Load()) }, n)
	start := time.Now()
	err := openLoop(n, func(i int) error {
		a := newArgs(i)
		a.Sent = time.Now().UnixNano()
		b, _ := json.Marshal(a)
		_, _, err := r.api.EnqueueID(ctx, httpapi.EnqueueRequest{Kind: a.Kind(), Queue: r.queue, Args: b})
		return err
	})
	if err == nil {
		select {
		case <-all:
		case err = <-werrs:
			if err == nil {
				err = errors.New("a worker stopped early")
			}
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("only %d of %d jobs started", started.Load(), n)
		}
	}
	elapsed := time.Since(start)
	if err == nil {
		// Let the last jobs' completions land before the workers stop,
		// so that no job is left running until its lease expires.
		select {
		case <-settled:
		case <-time.After(30 * time.Second):
			err = fmt.Errorf("only %d of %d jobs completed", completed.Load(), n)
		}
	}
	cancel()
	wg.Wait()
	stop()
	res := Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "enqueue call to worker start, over REST; 16 long-polling HTTP workers"}
	mu.Lock()
	setLatency(&res, lat)
	mu.Unlock()
	return res, err
}
