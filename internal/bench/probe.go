package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// Machine is what ProbeMachine measured of the machine a benchmark runs
// on, so that a figure can be read against the state of the machine that
// produced it: the same build can measure twice as fast on a day when the
// disk syncs faster or the host takes less of the CPU.
type Machine struct {
	// Fsyncs is how many 4 KiB write+fsync pairs ran; FsyncP50 and
	// FsyncP99 are their latencies in milliseconds.
	Fsyncs   int     `json:"fsyncs"`
	FsyncP50 float64 `json:"fsync_p50_ms"`
	FsyncP99 float64 `json:"fsync_p99_ms"`
	// CPUChunkP50 and CPUChunkP99 are how long a fixed piece of arithmetic
	// took, in microseconds, run over and over with short sleeps between.
	CPUChunkP50 float64 `json:"cpu_chunk_p50_us"`
	CPUChunkP99 float64 `json:"cpu_chunk_p99_us"`
	// SlowShare is the fraction of those pieces that took over four times
	// the median: the time the CPU ran far slower than usual (on a shared
	// virtual machine, while the host gives it less).
	SlowShare float64 `json:"cpu_slow_share"`
}

func (m Machine) String() string {
	return fmt.Sprintf("machine: fsync p50 %.3f ms, p99 %.3f ms (%d in 1 s); CPU chunk p50 %.0f µs, p99 %.0f µs, %.1f%% of chunks over 4x the median",
		m.FsyncP50, m.FsyncP99, m.Fsyncs, m.CPUChunkP50, m.CPUChunkP99, 100*m.SlowShare)
}

// ProbeMachine measures the disk under dir (the system temp dir when
// empty) for about a second and the CPU's steadiness for cpuFor.
func ProbeMachine(ctx context.Context, dir string, cpuFor time.Duration) (Machine, error) {
	var m Machine
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "probe-*")
	if err != nil {
		return m, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	var lat []time.Duration
	end := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(end) && ctx.Err() == nil; i++ {
		if _, err := f.WriteAt(buf, int64(i%256)*4096); err != nil {
			return m, err
		}
		t := time.Now()
		if err := f.Sync(); err != nil {
			return m, err
		}
		lat = append(lat, time.Since(t))
	}
	m.Fsyncs = len(lat)
	m.FsyncP50, m.FsyncP99 = quantileMs(lat, 0.5), quantileMs(lat, 0.99)

	var chunks []time.Duration
	end = time.Now().Add(cpuFor)
	for time.Now().Before(end) && ctx.Err() == nil {
		t := time.Now()
		cpuChunk()
		chunks = append(chunks, time.Since(t))
		time.Sleep(200 * time.Microsecond)
	}
	if len(chunks) == 0 {
		return m, ctx.Err()
	}
	slices.Sort(chunks)
	med := chunks[len(chunks)/2]
	slow := 0
	for _, d := range chunks {
		if d > 4*med {
			slow++
		}
	}
	m.CPUChunkP50 = float64(med) / float64(time.Microsecond)
	m.CPUChunkP99 = float64(chunks[len(chunks)*99/100]) / float64(time.Microsecond)
	m.SlowShare = float64(slow) / float64(len(chunks))
	return m, ctx.Err()
}

// quantileMs is the q-quantile of ds, in milliseconds.
func quantileMs(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[min(len(s)-1, int(q*float64(len(s))))]) / float64(time.Millisecond)
}

var probeSink uint64

// cpuChunk is about 30 µs of arithmetic on this project's reference
// machine, with nothing to wait for: its time varies only with the CPU.
func cpuChunk() {
	x := probeSink | 1
	for range 20000 {
		x = x*6364136223846793005 + 1442695040888963407
	}
	probeSink = x
}
