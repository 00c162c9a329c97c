package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/droverhq/drover"
)

// The ceilings are the workloads' shapes with Drover taken out: what this
// machine does with the same protocol or the same SQL and nothing else.
// A workload's figure next to its ceiling, measured in the same minutes,
// says how much of the machine Drover leaves unused, which a figure alone
// cannot on a machine whose speed changes from day to day.
var ceilings = []struct {
	id, desc string
	pg       bool // needs Config.DatabaseURL
	run      func(ctx context.Context, r *runner) (Result, error)
}{
	{"C1", "W1's rows alone: ready-made, sent by COPY 1,000 per statement on one connection, ids left to PostgreSQL", true, ceilingPGInsert},
	{"C2", "W2's HTTP alone: 50 clients POST a job's JSON to a handler that decodes it and answers 201, no store", false, ceilingHTTP},
	{"C3", "W3's SQL alone: Drover's lease (50 per statement) and completion statements, 4 connections, no Go work", true, ceilingPGDrain},
}

// Ceilings measures the ceilings: C2 always, C1 and C3 when
// cfg.DatabaseURL names a PostgreSQL (each in a fresh schema with
// Drover's tables, dropped afterwards).
func Ceilings(ctx context.Context, cfg Config) ([]Result, error) {
	if cfg.Scale <= 0 {
		cfg.Scale = 1
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	var out []Result
	for _, c := range ceilings {
		if c.pg && cfg.DatabaseURL == "" {
			fmt.Fprintf(cfg.Progress, "%s skipped: needs --database-url\n", c.id)
			continue
		}
		r := &runner{cfg: cfg, id: c.id}
		if c.pg {
			r.schema = fmt.Sprintf("drover_ceiling_%s_%d", strings.ToLower(c.id), time.Now().UnixNano())
		}
		res, err := c.run(ctx, r)
		if res, err = r.finish(res, r.dropSchema(err), c.desc); err != nil {
			return out, err
		}
		out = append(out, res)
	}
	return out, nil
}

// ceilingHTTP is C2: W2's request and response over loopback HTTP/1.1,
// one keep-alive connection per client as the REST workloads have, with
// a handler that only decodes the request and encodes a job-shaped
// answer.
func ceilingHTTP(ctx context.Context, r *runner) (Result, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return Result{}, err
	}
	var id atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var in struct {
			Kind  string          `json:"kind"`
			Queue string          `json:"queue"`
			Args  json.RawMessage `json:"args"`
		}
		if err := json.NewDecoder(req.Body).Decode(&in); err != nil || in.Kind == "" {
			http.Error(w, "bad job", http.StatusBadRequest)
			return
		}
		now := time.Now().UTC()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(map[string]any{ //nolint:errchkjson // the client sees a short body
			"id": id.Add(1), "kind": in.Kind, "queue": in.Queue, "state": "available", "args": in.Args,
			"priority": 1, "attempt": 0, "max_attempts": 25, "created_at": now, "scheduled_at": now,
		})
	})}
	go srv.Serve(ln)                         //nolint:errcheck // ends with Shutdown
	defer srv.Shutdown(context.Background()) //nolint:errcheck // nothing left to serve
	client := benchHTTPClient()
	defer client.CloseIdleConnections()
	url := "http://" + ln.Addr().String() + "/v1/jobs"

	res, err := r.closedLoop(r.scaled(20_000), "answered", func(i int) error {
		return postJob(ctx, client, url, i)
	})
	res.Note = "no store, no Drover code"
	return res, err
}

// postJob sends job i the way the REST client does and reads the answer.
func postJob(ctx context.Context, client *http.Client, url string, i int) error {
	body, err := json.Marshal(map[string]any{"kind": Args{}.Kind(), "queue": "default", "args": newArgs(i)})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		ID int64 `json:"id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated || out.ID == 0 {
		return fmt.Errorf("status %d, id %d", resp.StatusCode, out.ID)
	}
	return nil
}

// ceilingPool makes r's schema with Drover's own migrations and returns
// a pool whose connections use it.
func ceilingPool(ctx context.Context, r *runner, conns int) (*pgxpool.Pool, error) {
	st, err := drover.OpenPostgres(ctx, r.cfg.DatabaseURL, &drover.PostgresOptions{Schema: r.schema, Logger: quietLogger()})
	if err != nil {
		return nil, err
	}
	st.Close()
	pc, err := pgxpool.ParseConfig(r.cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = int32(conns) //nolint:gosec // G115: a handful
	pc.ConnConfig.RuntimeParams["search_path"] = r.schema
	return pgxpool.NewWithConfig(ctx, pc)
}

// ceilingRowSQL makes $1 rows like the benchmark's jobs inside
// PostgreSQL, with ids from the identity sequence as Drover takes them.
const ceilingRowSQL = `INSERT INTO drover_jobs (state, queue, kind, priority, scheduled_at, args, max_attempts, created_at)
SELECT 'available', 'default', 'bench.noop', 1, now(),
	('{"customer_id":' || (100000 + g) || ',"email":"someone@example.com","template":"welcome","locale":"en-GB"}')::json,
	25, now()
FROM generate_series(1, $1::integer) AS g`

// ceilingPGInsert is C1: W1's batches with the client's work taken out.
// The rows are built once, before the clock starts, and COPY'd as they
// are: no args encoding, no validation, no ids taken or returned. Rows
// that PostgreSQL makes itself (ceilingRowSQL) would go faster, but no
// client can send jobs that way.
func ceilingPGInsert(ctx context.Context, r *runner) (Result, error) {
	pool, err := ceilingPool(ctx, r, 1)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	now := time.Now()
	rows := make([][]any, 1000)
	for i := range rows {
		args, err := json.Marshal(newArgs(i))
		if err != nil {
			return Result{}, err
		}
		rows[i] = []any{"available", "default", Args{}.Kind(), int16(1), now, string(args), int32(25), now}
	}
	cols := []string{"state", "queue", "kind", "priority", "scheduled_at", "args", "max_attempts", "created_at"}
	n := r.scaled(100_000)
	var inserted atomic.Int64
	stop := r.ticker("inserted", func() int { return int(inserted.Load()) }, n)
	start := time.Now()
	for done := 0; done < n; {
		k := min(len(rows), n-done)
		got, err := pool.CopyFrom(ctx, pgx.Identifier{"drover_jobs"}, cols, pgx.CopyFromRows(rows[:k]))
		if err != nil {
			stop()
			return Result{}, err
		}
		if got != int64(k) {
			stop()
			return Result{}, fmt.Errorf("copied %d rows, not %d", got, k)
		}
		done += k
		inserted.Add(int64(k))
	}
	elapsed := time.Since(start)
	stop()
	return Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "PostgreSQL alone"}, nil
}

// The lease and completion of ceilingPGDrain: the statements of pgstore
// with what they return cut down to what the next statement needs.
const (
	ceilingLeaseSQL = `WITH cand AS (
	SELECT id FROM drover_jobs WHERE state = 'available' AND queue = 'default'
	ORDER BY priority, scheduled_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE drover_jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
	attempted_by = 'ceiling', lease_token = replace(gen_random_uuid()::text, '-', ''),
	lease_expires_at = now() + interval '30 seconds', settled = NULL
WHERE j.id = ANY(ARRAY(SELECT id FROM cand))
RETURNING j.id, j.lease_token`
	ceilingCompleteSQL = `UPDATE drover_jobs j SET state = 'completed', finalized_at = now(), output = NULL,
	lease_expires_at = NULL, settled = 'complete', unique_key = CASE WHEN j.unique_by_period THEN j.unique_key END
FROM unnest($1::bigint[], $2::text[]) AS c(id, token)
WHERE j.id = ANY($1::bigint[]) AND j.id = c.id AND j.lease_token = c.token AND (j.state = 'running') IS TRUE`
)

// ceilingPGDrain is C3: W3's state changes with no worker, engine or
// driver work beyond the two statements: each connection leases 50 jobs,
// then completes them, each statement its own durable transaction.
func ceilingPGDrain(ctx context.Context, r *runner) (Result, error) {
	const conns, batch = 4, 50
	pool, err := ceilingPool(ctx, r, conns)
	if err != nil {
		return Result{}, err
	}
	defer pool.Close()
	n := r.scaled(100_000)
	r.progress("filling %d jobs", n)
	for done := 0; done < n; done += 10_000 {
		if _, err := pool.Exec(ctx, ceilingRowSQL, min(10_000, n-done)); err != nil {
			return Result{}, err
		}
	}
	if _, err := pool.Exec(ctx, `ANALYZE drover_jobs`); err != nil {
		return Result{}, err
	}
	var completed atomic.Int64
	var firstErr atomic.Pointer[error]
	stop := r.ticker("completed", func() int { return int(completed.Load()) }, n)
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for firstErr.Load() == nil {
				k, err := leaseAndComplete(ctx, pool, batch)
				if err != nil {
					firstErr.CompareAndSwap(nil, &err)
					return
				}
				if k == 0 {
					return
				}
				completed.Add(int64(k))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	if p := firstErr.Load(); p != nil {
		return Result{}, *p
	}
	if got := completed.Load(); got != int64(n) {
		return Result{}, fmt.Errorf("completed %d jobs of %d", got, n)
	}
	return Result{Jobs: n, Seconds: elapsed.Seconds(), Note: "PostgreSQL alone"}, nil
}

// leaseAndComplete leases up to batch jobs and completes them, and
// returns how many it completed: 0 once none is left.
func leaseAndComplete(ctx context.Context, pool *pgxpool.Pool, batch int) (int, error) {
	rows, _ := pool.Query(ctx, ceilingLeaseSQL, batch)
	var ids []int64
	var tokens []string
	var id int64
	var token string
	if _, err := pgx.ForEachRow(rows, []any{&id, &token}, func() error {
		ids, tokens = append(ids, id), append(tokens, token)
		return nil
	}); err != nil {
		return 0, err
	}
	if len(ids) == 0 {
		return 0, nil
	}
	tag, err := pool.Exec(ctx, ceilingCompleteSQL, ids, tokens)
	if err != nil {
		return 0, err
	}
	if tag.RowsAffected() != int64(len(ids)) {
		return 0, errors.New("a leased job was not completed")
	}
	return len(ids), nil
}
