package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/testenv/faultproxy"
)

// TestPartitionSoak runs producers and workers through fault proxies
// whose faults change at random (partitions, lost answers, resets,
// delays) while jobs flow, then heals the network and checks the
// invariants: every acknowledged enqueue is stored once per idempotency
// key, every job is completed, and no job was completed by two lease
// tokens (a stale worker's settle never succeeded). The job's output
// names the token that completed it, so the stored result must be the
// one whose complete was answered 200.
//
// The default run is short (200 jobs per store). DROVER_PARTITION_JOBS
// sets another count (make partition runs 2,000), DROVER_PARTITION_SEED
// replays a fault schedule's choices (the timing still varies).
func TestPartitionSoak(t *testing.T) {
	t.Parallel()
	jobs := 200
	if v := os.Getenv("DROVER_PARTITION_JOBS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("DROVER_PARTITION_JOBS=%q: want a positive count", v)
		}
		jobs = n
	}
	seed := rand.Uint64()
	if v := os.Getenv("DROVER_PARTITION_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("DROVER_PARTITION_SEED=%q: %v", v, err)
		}
		seed = n
	}
	for _, b := range []struct {
		backend string
		offset  uint64 // each store gets its own schedule from the one seed
	}{{"embedded", 0}, {"postgres", 1}} {
		t.Run(b.backend, func(t *testing.T) {
			t.Parallel()
			s := ptServe(t, b.backend)
			t.Logf("seed %d (replay with DROVER_PARTITION_SEED=%d)", seed+b.offset, seed)
			soak(t, s, jobs, seed+b.offset)
		})
	}
}

// soakFaults are the faults a proxy switches between, with their weights.
var soakFaults = []struct {
	mode   faultproxy.Mode
	weight int
}{
	{faultproxy.Pass, 55},
	{faultproxy.Blackhole, 15},
	{faultproxy.DropResponses, 12},
	{faultproxy.Reset, 10},
	{faultproxy.Delay, 8},
}

func pickFault(r *rand.Rand) faultproxy.Mode {
	n := r.IntN(100)
	for _, f := range soakFaults {
		if n < f.weight {
			return f.mode
		}
		n -= f.weight
	}
	return faultproxy.Pass
}

// soakLog is what the clients saw, for the checks at the end.
type soakLog struct {
	mu sync.Mutex
	// acked maps an idempotency key to the job id its acknowledged
	// enqueues answered, every time.
	acked map[string][]int64
	// settled maps a job id to the lease tokens whose complete was
	// answered 200.
	settled map[int64][]string
	stale   int // completes refused with 409
	lost    int // calls that ended in a connection error or timeout
}

func soak(t *testing.T, s *ptServer, total int, seed uint64) {
	const (
		queue    = "pt-soak"
		workers  = 4
		leaseFor = "2s"
	)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	log := &soakLog{acked: map[string][]int64{}, settled: map[int64][]string{}}

	producerProxy := ptProxy(t, s)
	workerProxies := make([]*faultproxy.Proxy, workers)
	for i := range workerProxies {
		workerProxies[i] = ptProxy(t, s)
		workerProxies[i].SetDelay(300 * time.Millisecond)
	}
	producerProxy.SetDelay(300 * time.Millisecond)
	all := append([]*faultproxy.Proxy{producerProxy}, workerProxies...)

	// The chaos: every proxy changes its fault every 100 to 600 ms until
	// the producers are done and a few seconds more, then all heal.
	var chaosWG sync.WaitGroup
	chaosDone := make(chan struct{})
	schedules := make([]*rand.Rand, len(all))
	for i := range schedules {
		schedules[i] = rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
	}
	for i, p := range all {
		chaosWG.Add(1)
		go func() {
			defer chaosWG.Done()
			r := schedules[i]
			for {
				p.SetMode(pickFault(r))
				select {
				case <-chaosDone:
					p.SetMode(faultproxy.Pass)
					return
				case <-time.After(time.Duration(100+r.IntN(500)) * time.Millisecond):
				}
			}
		}()
	}
	heal := sync.OnceFunc(func() { close(chaosDone); chaosWG.Wait() })
	defer heal()

	// Workers: lease and complete through their own proxy, retrying a
	// complete after a connection error with the same token.
	wctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	var wwg sync.WaitGroup
	for w := range workers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			soakWorker(wctx, t, workerProxies[w], queue, leaseFor, log)
		}()
	}

	// Producers: each job has its own key and is sent until acknowledged.
	var next atomic.Int64
	var pwg sync.WaitGroup
	for range 2 {
		pwg.Add(1)
		r := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
		go func() {
			defer pwg.Done()
			hc := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{}}
			defer hc.CloseIdleConnections()
			for {
				i := int(next.Add(1)) - 1
				if i >= total || ctx.Err() != nil {
					return
				}
				key := "soak-" + strconv.Itoa(i)
				body := map[string]any{"kind": "soak", "queue": queue, "args": map[string]int{"i": i}, "max_attempts": 1000}
				for ctx.Err() == nil {
					ans, err := ptCall(ctx, hc, http.MethodPost, producerProxy.URL()+"/v1/jobs", body, http.Header{"Idempotency-Key": {key}})
					if err != nil {
						log.mu.Lock()
						log.lost++
						log.mu.Unlock()
						select {
						case <-ctx.Done():
						case <-time.After(50 * time.Millisecond):
						}
						continue
					}
					if ans.status != http.StatusCreated {
						t.Errorf("enqueue %s: %d %s", key, ans.status, ans.body)
						return
					}
					var j hwJob
					if err := json.Unmarshal(ans.body, &j); err != nil {
						t.Errorf("enqueue %s: %v", key, err)
						return
					}
					log.mu.Lock()
					log.acked[key] = append(log.acked[key], j.ID)
					log.mu.Unlock()
					// Sometimes send an acknowledged request again, as a
					// client that lost track would.
					if r.IntN(4) > 0 {
						break
					}
				}
			}
		}()
	}
	pwg.Wait()
	if t.Failed() {
		return
	}
	select {
	case <-ctx.Done():
	case <-time.After(3 * time.Second):
	}
	heal()

	// Drain: wait until every job is completed.
	deadline := time.After(5 * time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		jobs := ptQueueJobsAll(t, s, queue)
		done := 0
		for _, j := range jobs {
			if j.State == "completed" {
				done++
			}
		}
		if done == len(jobs) && len(jobs) >= total {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("after healing, %d of %d jobs completed within 5 minutes", done, len(jobs))
		case <-tick.C:
		}
	}
	stopWorkers()
	wwg.Wait()

	// The checks.
	jobs := ptQueueJobsAll(t, s, queue)
	byID := map[int64]hwJob{}
	for _, j := range jobs {
		byID[j.ID] = j
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	if len(log.acked) != total {
		t.Errorf("%d keys acknowledged, want %d", len(log.acked), total)
	}
	for key, ids := range log.acked {
		for _, id := range ids[1:] {
			if id != ids[0] {
				t.Errorf("key %s answered jobs %v: one key must make one job", key, ids)
				break
			}
		}
		if _, ok := byID[ids[0]]; !ok {
			t.Errorf("key %s: acknowledged job %d is missing", key, ids[0])
		}
	}
	if len(jobs) != total {
		t.Errorf("queue %s holds %d jobs for %d keys", queue, len(jobs), total)
	}
	completions := 0
	for _, j := range jobs {
		tokens := log.settled[j.ID]
		distinct := map[string]bool{}
		for _, tok := range tokens {
			distinct[tok] = true
		}
		completions += len(tokens)
		switch {
		case j.State != "completed":
			t.Errorf("job %d is %s, want completed", j.ID, j.State)
		case len(distinct) > 1:
			t.Errorf("job %d was completed with %d different lease tokens: a stale settle succeeded", j.ID, len(distinct))
		case len(distinct) == 0:
			// Every complete answer was lost and the worker gave up: the
			// job was still completed once, by some token.
		default:
			var out struct {
				By string `json:"by"`
			}
			if err := json.Unmarshal(j.Output, &out); err != nil || out.By != tokens[0] {
				t.Errorf("job %d's output %s is not from the token whose complete succeeded", j.ID, j.Output)
			}
		}
		if j.Attempt > j.MaxAttempts {
			t.Errorf("job %d: attempt %d past max_attempts %d", j.ID, j.Attempt, j.MaxAttempts)
		}
	}
	rescued := 0
	for _, j := range jobs {
		rescued += len(j.Errors)
	}
	dropped := 0
	for _, p := range all {
		dropped += p.Dropped()
	}
	t.Logf("%d jobs, %d successful complete answers, %d stale completes refused (409), %d attempts rescued, %d answers dropped by the proxies, %d calls lost to faults; violations: %d",
		len(jobs), completions, log.stale, rescued, dropped, log.lost, soakViolations(t))
}

// soakViolations is 0 when the test has not failed: the figure the log
// line reports.
func soakViolations(t *testing.T) int {
	if t.Failed() {
		return 1
	}
	return 0
}

// soakWorker leases and completes jobs through p until ctx ends.
func soakWorker(ctx context.Context, t *testing.T, p *faultproxy.Proxy, queue, leaseFor string, log *soakLog) {
	hc := &http.Client{Timeout: 4 * time.Second, Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	pause := func() {
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	for ctx.Err() == nil {
		ans, err := ptCall(ctx, hc, http.MethodPost, p.URL()+"/v1/lease",
			map[string]any{"queues": []string{queue}, "max": 2, "wait": "1s", "lease_for": leaseFor}, nil)
		if err != nil {
			if ctx.Err() == nil {
				log.mu.Lock()
				log.lost++
				log.mu.Unlock()
			}
			pause()
			continue
		}
		if ans.status != http.StatusOK {
			t.Errorf("lease: %d %s", ans.status, ans.body)
			return
		}
		var leased struct {
			Jobs []ptLeased `json:"jobs"`
		}
		if err := json.Unmarshal(ans.body, &leased); err != nil {
			t.Errorf("lease: %v", err)
			return
		}
		for _, j := range leased.Jobs {
			url := fmt.Sprintf("%s/v1/jobs/%d/complete", p.URL(), j.ID)
			body := map[string]any{"lease_token": j.LeaseToken, "output": map[string]string{"by": j.LeaseToken}}
			for try := 0; try < 6 && ctx.Err() == nil; try++ {
				ans, err := ptCall(ctx, hc, http.MethodPost, url, body, nil)
				if err != nil {
					if ctx.Err() == nil {
						log.mu.Lock()
						log.lost++
						log.mu.Unlock()
					}
					pause()
					continue
				}
				log.mu.Lock()
				switch ans.status {
				case http.StatusOK:
					log.settled[j.ID] = append(log.settled[j.ID], j.LeaseToken)
				case http.StatusConflict:
					log.stale++
				default:
					t.Errorf("complete job %d: %d %s", j.ID, ans.status, ans.body)
				}
				log.mu.Unlock()
				break
			}
		}
	}
}

// ptQueueJobsAll lists every job of queue, page by page, directly.
func ptQueueJobsAll(t *testing.T, s *ptServer, queue string) []hwJob {
	t.Helper()
	var all []hwJob
	cursor := ""
	for range 1000 {
		url := s.base + "/v1/jobs?limit=1000&queue=" + queue
		if cursor != "" {
			url += "&cursor=" + cursor
		}
		var page struct {
			Jobs       []hwJob `json:"jobs"`
			NextCursor string  `json:"next_cursor"`
		}
		ptMust(t, ptDirect, http.MethodGet, url, nil, nil, http.StatusOK).decode(t, &page)
		all = append(all, page.Jobs...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
	t.Fatalf("listing queue %s: more than 1000 pages", queue)
	return nil
}
