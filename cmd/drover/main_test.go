package main

import (
	"bytes"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/store/sqlitestore"
)

// Exit statuses of run, as DESIGN.md section 6 gives them.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// serveArgs returns "serve" with a fresh data directory, a port-0 address
// and the given flags, so that no case touches the working directory.
func serveArgs(t *testing.T, flags ...string) []string {
	t.Helper()
	args := []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--addr", "127.0.0.1:0", "--unsafe-no-sync"}
	return append(args, flags...)
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args func(t *testing.T) []string
		want int
	}{
		{"version", fixed("version"), exitOK},
		{"help", fixed("help"), exitOK},
		{"version with an argument", fixed("version", "extra"), exitUsage},
		{"unknown command", fixed("nosuchcommand"), exitUsage},
		{"unknown command with flags", fixed("nosuchcommand", "--addr", "127.0.0.1:0"), exitUsage},
		{"misspelt command", fixed("serv"), exitUsage},
		{"unknown root flag", fixed("--nope"), exitUsage},
		{"unknown serve flag", func(t *testing.T) []string { return serveArgs(t, "--nope") }, exitUsage},
		{"serve flag without its value", func(t *testing.T) []string { return serveArgs(t, "--lease-for") }, exitUsage},
		{"serve flag with a bad value", func(t *testing.T) []string { return serveArgs(t, "--lease-for", "soon") }, exitUsage},
		{"serve with an argument", func(t *testing.T) []string { return serveArgs(t, "extra-arg") }, exitUsage},
		{"serve on a non-loopback address without --insecure", func(t *testing.T) []string { return serveArgs(t, "--addr", "0.0.0.0:9") }, exitUsage},
		{"serve with an unknown log format", func(t *testing.T) []string { return serveArgs(t, "--log-format", "xml") }, exitUsage},
		{"serve with an unknown log level", func(t *testing.T) []string { return serveArgs(t, "--log-level", "loud") }, exitUsage},
		{"bench --ceilings with workloads", fixed("bench", "--ceilings", "--workloads", "W1"), exitUsage},
		{"bench --ceilings against a server", fixed("bench", "--ceilings", "--server", "http://127.0.0.1:1"), exitUsage},
		{"serve with a missing config file", func(t *testing.T) []string {
			return serveArgs(t, "--config", filepath.Join(t.TempDir(), "absent.yaml"))
		}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args(t)
			if got := run(args); got != tt.want {
				t.Errorf("run(%q) = %d, want %d", args, got, tt.want)
			}
		})
	}
}

func fixed(args ...string) func(*testing.T) []string {
	return func(*testing.T) []string { return args }
}

func TestRunServeOnLockedDataDirFails(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := sqlitestore.Open(dir, sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	args := []string{"serve", "--data-dir", dir, "--addr", "127.0.0.1:0"}
	if got := run(args); got != exitFail {
		t.Errorf("run(%q) with the data dir locked = %d, want %d", args, got, exitFail)
	}
}

func TestRunServeWithUnreachableDatabaseFails(t *testing.T) {
	t.Parallel()
	// A database that does not answer is a failed operation, not bad
	// usage: the command line itself is well-formed.
	args := serveArgs(t, "--database-url", "postgres://u@127.0.0.1:1/drover?connect_timeout=5")
	if got := run(args); got != exitFail {
		t.Errorf("run(%q) = %d, want %d", args, got, exitFail)
	}
}

func TestVersionOutput(t *testing.T) {
	t.Parallel()
	cmd := newVersionCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs(nil)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("version: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("version printed %d lines, want 3:\n%s", len(lines), out.String())
	}
	if want := "drover " + version; lines[0] != want {
		t.Errorf("version line 1 = %q, want %q", lines[0], want)
	}
	if !strings.HasPrefix(lines[1], "commit ") || lines[1] == "commit " {
		t.Errorf("version line 2 = %q, want \"commit <revision>\"", lines[1])
	}
	if want := "go " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH; lines[2] != want {
		t.Errorf("version line 3 = %q, want %q", lines[2], want)
	}
}

func TestOneLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{"single line", "log_format \"xml\": want json or text", "log_format \"xml\": want json or text"},
		{"joined errors", "addr \"x\": missing port\nlog_level \"loud\": bad", "addr \"x\": missing port; log_level \"loud\": bad"},
		{"cobra suggestion", "unknown command \"serv\" for \"drover\"\n\nDid you mean this?\n\tserve\n", "unknown command \"serv\" for \"drover\"; Did you mean this?; serve"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("%s: oneLine(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}
