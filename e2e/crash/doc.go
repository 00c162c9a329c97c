// Package crash holds the kill -9 crash harness of the real server binary.
//
// Each iteration starts `drover serve` on a fresh data directory (or a
// fresh PostgreSQL schema), runs producers that enqueue over REST (most
// requests with an Idempotency-Key, repeated with the same key when a
// crash cut them off) and workers that lease, heartbeat, complete and fail
// jobs over REST (some fail, some give up a lease without settling, some
// outlive their lease, and some try to settle with the token of an earlier
// attempt), kills the server with SIGKILL 1 to 3 times at random moments
// and restarts it on the same data, drains every job to a final state,
// kills it once more, and checks the invariants against the harness's own
// log of what the server acknowledged:
//
//   - no acknowledged enqueue is missing;
//   - no enqueue (with or without an idempotency key) is stored twice, and
//     a repeat with the key returns the first reply's jobs;
//   - no job is completed by a stale lease token, no two tokens complete
//     one job, and a settle with an earlier attempt's token is refused;
//   - every job reaches a final state once the faults stop;
//   - a second execution of a job starts only after the first one's worker
//     sent its failure or its lease expired (in the order the harness saw);
//   - finished is final: an acknowledged completion or discard stays so,
//     also across the last kill -9;
//   - attempts never exceed max_attempts, an acknowledged lease is never
//     handed out again, and every acknowledged failure is in the job's
//     history.
//
// TestCrashEmbedded runs on the embedded store and TestCrashPostgres on
// PostgreSQL. With DROVER_CRASH_PG_STOP=1, TestCrashPostgres also stops
// PostgreSQL with `pg_ctl stop -m immediate` and starts it again: a
// PostgreSQL of the test's own, made with initdb in a temporary directory,
// so that other tests using the shared server are not disturbed (see
// pgStopEnv).
//
// Without flags the tests run a quick mode, which every `go test` (and so
// `make test`) runs; `make crash` runs the CI counts and `make soak` the
// long run. The flags go after the package:
//
//	go test ./e2e/crash -run TestCrash -v -crash.iterations=100 -crash.pg-iterations=20
//	go test ./e2e/crash -run TestCrashEmbedded -v -seed=1234 -crash.iterations=1
//
// Iteration i runs with seed base+i (-seed sets base; it is printed at the
// start). The seed fixes the workload: the requests, what the workers do
// with each attempt, and the kinds and times of the faults. So
// -seed=N -crash.iterations=1 replays iteration N's plan, although which
// requests a crash cuts off depends on the scheduler. A failing iteration
// keeps its directory (the server's log, the data directory and
// ledger.json, the harness's log with the jobs it listed) and prints its
// path; on PostgreSQL it also keeps the schema.
//
// The tests run on Linux only: they rely on SIGKILL and on the servers
// dying with the test (Pdeathsig).
package crash
