package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// TestRunAllWorkloadsSmall runs every workload at a tiny scale and checks
// that each reports what it measures. It asserts no speed: figures come
// from `drover bench`, recorded in docs/benchmarks.md.
func TestRunAllWorkloadsSmall(t *testing.T) {
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
	_, err := Run(t.Context(), Config{Workloads: []string{"W9"}, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "unknown workload") {
		t.Fatalf("error %v, want unknown workload", err)
	}
}
