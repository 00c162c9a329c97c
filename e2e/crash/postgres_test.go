//go:build linux

package crash

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgStopEnv, set to 1, makes TestCrashPostgres stop PostgreSQL itself
// (pg_ctl stop -m immediate) as well as kill the server. The harness
// stops a PostgreSQL of its own, made with initdb for the test, never the
// shared one other tests use at the same time; it needs PostgreSQL's
// server binaries (initdb, pg_ctl), and runs them as the postgres user
// when the tests run as root.
const pgStopEnv = "DROVER_CRASH_PG_STOP"

// pgBinDirEnv names the directory of initdb and pg_ctl when they are
// neither under /usr/lib/postgresql/*/bin (Debian) nor on PATH.
const pgBinDirEnv = "DROVER_CRASH_PG_BINDIR"

// pgCluster is a PostgreSQL server of the test's own, in a temporary
// directory, that the harness may stop at any moment.
type pgCluster struct {
	bin    string // the directory of initdb and pg_ctl
	dir    string // holds data/, the log and the socket
	port   int
	asUser string // run the binaries as this user (when root); "" for the current one
}

// pgBinDir finds initdb and pg_ctl: $DROVER_CRASH_PG_BINDIR, the newest
// /usr/lib/postgresql/N/bin, or PATH.
func pgBinDir() string {
	if d := os.Getenv(pgBinDirEnv); d != "" {
		return d
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// newPGCluster creates and starts a PostgreSQL server in a temporary
// directory. It is stopped when the test ends, and its directory removed
// unless the test failed.
func newPGCluster(t *testing.T) *pgCluster {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		t.Fatalf("%s=1 needs PostgreSQL's initdb and pg_ctl: none under /usr/lib/postgresql/*/bin or on PATH; set %s", pgStopEnv, pgBinDirEnv)
	}
	dir, err := os.MkdirTemp("", "drover-crash-pg-") //nolint:usetesting // kept when the test fails; chowned to postgres
	if err != nil {
		t.Fatal(err)
	}
	c := &pgCluster{bin: bin, dir: dir}
	if os.Geteuid() == 0 {
		// initdb and postgres refuse to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root, the PostgreSQL binaries must run as the postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		c.asUser = "postgres"
	}
	if c.port, err = freePort(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if err := c.run(ctx, "initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", c.data()); err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), time.Minute)
		defer cancel()
		if err := c.run(ctx, "pg_ctl", "stop", "-D", c.data(), "-m", "immediate"); err != nil && !strings.Contains(err.Error(), "Is server running?") {
			t.Errorf("stop the test's PostgreSQL: %v", err)
		}
		if t.Failed() {
			t.Logf("the test's PostgreSQL is kept in %s (start it with %s/pg_ctl start -D %s)", dir, bin, c.data())
			return
		}
		os.RemoveAll(dir)
	})
	if err := c.start(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *pgCluster) data() string { return filepath.Join(c.dir, "data") }

// url is the server's database URL, with a small pool for each drover.
func (c *pgCluster) url() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&pool_max_conns=6", c.port)
}

// run runs one of the PostgreSQL binaries, as the postgres user if need be.
func (c *pgCluster) run(ctx context.Context, name string, args ...string) error {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asUser != "" {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.asUser, "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// stopImmediate stops the server as a crash would: pg_ctl stop -m
// immediate ends every process without a checkpoint, and the next start
// recovers from the WAL.
func (c *pgCluster) stopImmediate(ctx context.Context) error {
	return c.run(ctx, "pg_ctl", "stop", "-D", c.data(), "-m", "immediate")
}

// start starts the server and waits until it accepts connections.
func (c *pgCluster) start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c max_connections=60", c.port, c.dir)
	if err := c.run(ctx, "pg_ctl", "start", "-W", "-D", c.data(), "-l", filepath.Join(c.dir, "postgresql.log"), "-o", opts); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, readyDeadline)
	defer cancel()
	url := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.port)
	for {
		conn, err := pgx.Connect(ctx, url)
		if err == nil {
			return conn.Close(ctx)
		}
		if !pause(ctx, 50*time.Millisecond) {
			return fmt.Errorf("the test's PostgreSQL did not start within %s: %w; log ends:\n%s", readyDeadline, err, logTail(filepath.Join(c.dir, "postgresql.log"), 2000))
		}
	}
}
