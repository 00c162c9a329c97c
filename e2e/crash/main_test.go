//go:build linux

package crash

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// The harness's flags, given after the package: go test ./e2e/crash
// -crash.iterations=100. Zero means the quick default of crash_test.go.
var (
	seedFlag       = flag.Uint64("seed", 0, "base seed: iteration i runs with seed+i (0: from the clock)")
	iterationsFlag = flag.Int("crash.iterations", 0, "iterations on the embedded store (0: the quick default)")
	pgIterFlag     = flag.Int("crash.pg-iterations", 0, "iterations on PostgreSQL (0: the quick default)")
	parallelFlag   = flag.Int("crash.parallel", 0, "iterations run at once per store (0: the default)")
)

// droverBin is the binary that TestMain builds from ../../cmd/drover.
var droverBin string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash:", err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fmt.Fprintf(os.Stderr, "crash: %s is not the module root: %v\n", root, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "drover-crash-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crash:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	droverBin = filepath.Join(dir, "drover")
	build := exec.Command("go", "build", "-o", droverBin, "./cmd/drover")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "crash: build drover:", err)
		return 1
	}
	return m.Run()
}
