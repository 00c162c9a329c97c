package main

import (
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/droverhq/drover/internal/bench"
)

func newBenchCmd() *cobra.Command {
	var (
		workloads   string
		dataDir     string
		scale       float64
		asJSON      bool
		probe       bool
		noSync      bool
		server      string
		databaseURL string
		cpuProfile  string
		token       string
		protocol    string
		ceilings    bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Run the benchmark workloads W1-W5 and print one table",
		Long: `Run the benchmark workloads of Drover's design in-process, with the Go
library on the embedded store (durable settings):

  W1  insert 100,000 jobs in batches of 1,000                      jobs/s
  W2  50 concurrent clients insert single jobs, 20,000 in all      jobs/s, p50/p99
  W3  drain 100,000 waiting jobs with 100 concurrent workers       jobs/s
  W4  insert one job every millisecond for 10 s while workers run  enqueue-to-start p50/p99/max
  W5  peak RSS while W3 runs with 1,000,000 jobs waiting           MiB

With --database-url, they run on PostgreSQL instead, each workload in a
fresh schema that is dropped afterwards.

With --server URL, W1-W4 run against a running drover serve (each run in
a fresh queue); W5 is in-process only. --protocol says how: rest (HTTP
calls and long-poll leases) or grpc (the Go library's remote store:
gRPC inserts and workers on the Work stream).

With --ceilings, it measures the machine instead: the workloads' shapes
with Drover taken out, to read Drover's figures against what the same
minutes allow.

  C1  W1's SQL alone in PostgreSQL (needs --database-url)
  C2  W2's HTTP alone: 50 clients, a handler that only decodes and answers
  C3  W3's lease and completion SQL alone in PostgreSQL (needs --database-url)

Progress lines go to stderr; the table (or --json) to stdout.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if databaseURL == "" {
				databaseURL = os.Getenv("DROVER_DATABASE_URL")
			}
			if databaseURL != "" && server != "" {
				return &usageError{errors.New("--database-url and --server exclude each other: with --server the server's own store is measured")}
			}
			if protocol != "rest" && protocol != "grpc" {
				return &usageError{fmt.Errorf("--protocol must be rest or grpc, not %q", protocol)}
			}
			if protocol == "grpc" && server == "" {
				return &usageError{errors.New("--protocol grpc needs --server")}
			}
			if ceilings && (server != "" || workloads != "") {
				return &usageError{errors.New("--ceilings measures the machine alone: it takes no --server or --workloads")}
			}
			if scale <= 0 || scale > 100 {
				return &usageError{errors.New("--scale must be in (0, 100]")}
			}
			var ids []string
			if workloads != "" {
				ids = strings.Split(workloads, ",")
			}
			if dataDir != "" {
				if err := os.MkdirAll(dataDir, 0o750); err != nil {
					return err
				}
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile) //nolint:gosec // G304: the operator names the profile file on the command line
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
				defer pprof.StopCPUProfile()
			}
			var machine string
			if probe {
				m, perr := bench.ProbeMachine(cmd.Context(), dataDir, 2*time.Second)
				if perr != nil {
					return fmt.Errorf("probe the machine: %w", perr)
				}
				machine = m.String()
				fmt.Fprintln(cmd.ErrOrStderr(), machine)
			}
			cfg := bench.Config{
				Workloads: ids, DataDir: dataDir, Scale: scale, NoSync: noSync, Progress: cmd.ErrOrStderr(),
				Server: server, Token: token, DatabaseURL: databaseURL, Protocol: protocol,
			}
			run := bench.Run
			if ceilings {
				run = bench.Ceilings
			}
			results, err := run(cmd.Context(), cfg)
			if err != nil && len(results) == 0 {
				if strings.Contains(err.Error(), "unknown workload") {
					return &usageError{err}
				}
				return err
			}
			if asJSON {
				if jerr := bench.WriteJSON(cmd.OutOrStdout(), results); jerr != nil {
					return jerr
				}
			} else {
				if machine != "" {
					fmt.Fprintln(cmd.OutOrStdout(), machine)
				}
				bench.WriteTable(cmd.OutOrStdout(), results)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&workloads, "workloads", "", "comma-separated workloads to run (default all: "+strings.Join(bench.IDs(), ",")+")")
	f.StringVar(&dataDir, "data-dir", "", "directory for the benchmark stores (default the system temp dir; use one on the disk you want to measure)")
	f.Float64Var(&scale, "scale", 1, "multiply job counts and durations (0.1 for a quick run)")
	f.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	f.BoolVar(&probe, "probe", true, "first measure the machine (fsync latency, and how steady the CPU is) for 3 s, and print it with the results")
	f.BoolVar(&noSync, "unsafe-no-sync", false, "skip fsync (not the durable setting the figures are about)")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the run to this file (go tool pprof)")
	f.StringVar(&server, "server", "", "run W1-W4 against a running server over REST instead of in-process")
	f.StringVar(&token, "token", "", "bearer token for --server")
	f.StringVar(&protocol, "protocol", "rest", "with --server: rest, or grpc for the Go library's remote store (gRPC and the Work stream)")
	f.BoolVar(&ceilings, "ceilings", false, "measure the machine's ceilings C1-C3 (the workloads' HTTP and SQL with Drover taken out) instead of the workloads")
	f.StringVar(&databaseURL, "database-url", "", "run in-process on this PostgreSQL database, each workload in a fresh schema (DROVER_DATABASE_URL)")
	return cmd
}
