package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/config"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/server"
	"github.com/droverhq/drover/internal/store/pgstore/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestRunAllWorkloadsSmall runs every workload at a tiny scale and checks
// that each reports what it measures. It asserts no speed: figures come
// from `drover bench`, recorded in docs/benchmarks.md.
func TestRunAllWorkloadsSmall(t *testing.T) {
	t.Parallel()
	var progress bytes.Buffer
	results, err := Run(t.Context(), Config{DataDir: t.TempDir(), Scale: 0.01, NoSync: true, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(workloads) {
		t.Fatalf("%d results, want %d", len(results), len(workloads))
	}
	for _, r := range results {
		if r.Jobs <= 0 || r.Seconds <= 0 || r.JobsPerSec <= 0 {
			t.Errorf("%s: jobs %d, seconds %f, jobs/s %f", r.Workload, r.Jobs, r.Seconds, r.JobsPerSec)
		}
		switch r.Workload {
		case "W2", "W4":
			if r.P50ms <= 0 || r.P99ms < r.P50ms || r.MaxMs < r.P99ms {
				t.Errorf("%s latencies p50 %f p99 %f max %f", r.Workload, r.P50ms, r.P99ms, r.MaxMs)
			}
		case "W5":
			if r.PeakRSSMiB <= 0 {
				t.Errorf("W5 peak RSS %f", r.PeakRSSMiB)
			}
		}
		if !strings.Contains(progress.String(), r.Workload+" done:") {
			t.Errorf("no progress line for %s", r.Workload)
		}
	}
	var table bytes.Buffer
	WriteTable(&table, results)
	if lines := strings.Count(table.String(), "\n"); lines != len(results)+1 {
		t.Errorf("table has %d lines, want header + %d:\n%s", lines, len(results), table.String())
	}
	var js bytes.Buffer
	if err := WriteJSON(&js, results); err != nil {
		t.Fatal(err)
	}
	var decoded struct{ Results []Result }
	if err := json.Unmarshal(js.Bytes(), &decoded); err != nil || len(decoded.Results) != len(results) {
		t.Fatalf("JSON output: %v, %d results", err, len(decoded.Results))
	}
}

func TestRunRejectsUnknownWorkload(t *testing.T) {
	t.Parallel()
	_, err := Run(t.Context(), Config{Workloads: []string{"W9"}, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "unknown workload") {
		t.Fatalf("error %v, want unknown workload", err)
	}
}

// TestRunOverServerSmall runs W1-W4 against the real server assembly over
// REST and over gRPC (the library's remote store, workers on the Work
// stream) at a tiny scale and checks that each reports what it measures.
func TestRunOverServerSmall(t *testing.T) {
	t.Parallel()
	// One after the other: under the race detector, two open-loop W4
	// runs at once can push a server past its request limit.
	for _, protocol := range []string{"rest", "grpc"} { //nolint:paralleltest // sequential on purpose, see above
		t.Run(protocol, func(t *testing.T) { runOverServer(t, protocol) })
	}
}

func runOverServer(t *testing.T, protocol string) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Addr = "127.0.0.1:0"
	cfg.NoSync = true
	srv, err := server.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	var progress bytes.Buffer
	results, err := Run(t.Context(), Config{Server: "http://" + ln.Addr().String(), Protocol: protocol, Scale: 0.02, Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	t.Logf("over %s:\n%s", protocol, progress.String())
	if len(results) != 4 {
		t.Fatalf("%d results over %s, want W1-W4", len(results), protocol)
	}
	for _, r := range results {
		if r.Jobs <= 0 || r.JobsPerSec <= 0 {
			t.Errorf("%s: %+v", r.Workload, r)
		}
		if (r.Workload == "W2" || r.Workload == "W4") && (r.P50ms <= 0 || r.P99ms < r.P50ms) {
			t.Errorf("%s latencies %+v", r.Workload, r)
		}
	}
	if !strings.Contains(progress.String(), "W5 skipped") {
		t.Errorf("W5 not reported as skipped over %s:\n%s", protocol, progress.String())
	}
	// Every job the workloads leased was settled before they returned:
	// none is left running until its lease expires.
	queues, err := srv.Engine().Queues(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range queues {
		if n := q.Counts[job.StateRunning]; n != 0 {
			t.Errorf("queue %s has %d jobs still running after the run over %s", q.Name, n, protocol)
		}
	}
	if _, err := Run(t.Context(), Config{Server: "http://" + ln.Addr().String(), Protocol: protocol, Workloads: []string{"W5"}}); err == nil {
		t.Errorf("W5 over %s did not fail", protocol)
	}
	if protocol == "grpc" {
		if _, err := Run(t.Context(), Config{Protocol: "grpc"}); err == nil {
			t.Error("protocol grpc without a server did not fail")
		}
		if _, err := Run(t.Context(), Config{Server: "http://" + ln.Addr().String(), Protocol: "carrier-pigeon"}); err == nil {
			t.Error("an unknown protocol did not fail")
		}
	}
}

// TestProbeMachine checks that the machine probe reports a measurement of
// each thing it names. It asserts no speed.
func TestProbeMachine(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := ProbeMachine(t.Context(), dir, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if m.Fsyncs == 0 || m.FsyncP50 <= 0 || m.FsyncP99 < m.FsyncP50 {
		t.Errorf("fsync figures missing or out of order: %+v", m)
	}
	if m.CPUChunkP50 <= 0 || m.CPUChunkP99 < m.CPUChunkP50 || m.SlowShare < 0 || m.SlowShare > 1 {
		t.Errorf("CPU figures missing or out of range: %+v", m)
	}
	if s := m.String(); !strings.Contains(s, "fsync p50") || !strings.Contains(s, "CPU chunk p50") {
		t.Errorf("String() = %q", s)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("the probe left files behind in its directory: %v %v", entries, err)
	}
}

// TestCeilingsSmall runs the ceilings at a tiny scale: C2 always, C1 and
// C3 on the test PostgreSQL. Each checks its own work (rows inserted,
// every leased job completed, every request answered 201); this checks
// what each reports and that the scratch schemas are gone afterwards.
func TestCeilingsSmall(t *testing.T) {
	t.Parallel()
	url := pgtest.TestURL(t)
	var progress bytes.Buffer
	results, err := Ceilings(t.Context(), Config{Scale: 0.02, DatabaseURL: url, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range results {
		ids = append(ids, r.Workload)
		if r.Jobs <= 0 || r.Seconds <= 0 || r.JobsPerSec <= 0 || r.Desc == "" {
			t.Errorf("%s: %+v", r.Workload, r)
		}
		if r.Workload == "C2" && (r.P50ms <= 0 || r.P99ms < r.P50ms) {
			t.Errorf("C2 latencies p50 %f p99 %f", r.P50ms, r.P99ms)
		}
	}
	if strings.Join(ids, ",") != "C1,C2,C3" {
		t.Fatalf("ran %v, want C1,C2,C3", ids)
	}
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var left int
	if err := pool.QueryRow(t.Context(), `SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'drover\_ceiling\_%'`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d ceiling schemas left behind", left)
	}

	// Without a database only C2 runs, and the others say why not.
	progress.Reset()
	results, err = Ceilings(t.Context(), Config{Scale: 0.01, Progress: &progress})
	if err != nil || len(results) != 1 || results[0].Workload != "C2" {
		t.Fatalf("without a database: %v, %+v", err, results)
	}
	if !strings.Contains(progress.String(), "C1 skipped: needs --database-url") {
		t.Errorf("progress:\n%s", progress.String())
	}
}
