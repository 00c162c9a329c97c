package config_test

import (
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/droverhq/drover/internal/config"
)

// FuzzLoad feeds arbitrary YAML files and DROVER_* values to Load. It must
// never panic; whatever it returns without error is valid (Validate
// passes, every limit is in range), and a duration given in the
// environment is the one in force, over the file.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("addr: 127.0.0.1:9000\nlease_for: 45s\n"), "", "", "")
	f.Add([]byte("max_args_bytes: 2048\nretain_completed: 0\n"), "1m", "4096", "[::1]:0")
	f.Add([]byte("lease_for: 30\n"), "", "", "")
	f.Add([]byte("addr: [\n"), "1h", "", "")
	f.Add([]byte("max_args_bytes: 1e30\nlog_level: loud\n"), "25h", "0x400", "host")
	f.Add([]byte("{addr: 1, unknown_key: {a: [1, 2]}, lease_for: !!binary aGVsbG8=}"), "-1s", "-1", ":8080")
	f.Add([]byte("&a [*a]"), "", "", "")
	f.Add([]byte("\xff\xfe"), "1s\x00", "\xff", "\xff")
	path := filepath.Join(f.TempDir(), "drover.yaml")
	f.Fuzz(func(t *testing.T, yaml []byte, leaseFor, maxArgs, addr string) {
		if err := os.WriteFile(path, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		environ := []string{"DROVER_CONFIG=" + path}
		for k, v := range map[string]string{"DROVER_LEASE_FOR": leaseFor, "DROVER_MAX_ARGS_BYTES": maxArgs, "DROVER_ADDR": addr} {
			if v != "" {
				environ = append(environ, k+"="+v)
			}
		}
		fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		config.Flags(fs)
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(fs, environ)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("Load failed with an empty message")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Load returned a configuration that Validate refuses: %v", err)
		}
		if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
			t.Fatalf("addr %q: %v", cfg.Addr, err)
		}
		if cfg.MaxArgsBytes < 1024 || cfg.MaxArgsBytes > 64<<20 || cfg.LeaseFor < time.Second || cfg.LeaseFor > 24*time.Hour {
			t.Fatalf("limits out of range: max_args_bytes %d, lease_for %s", cfg.MaxArgsBytes, cfg.LeaseFor)
		}
		if leaseFor != "" {
			if d, err := time.ParseDuration(leaseFor); err != nil || d != cfg.LeaseFor {
				t.Fatalf("DROVER_LEASE_FOR=%q gave lease_for %s (time.ParseDuration: %v, %v)", leaseFor, cfg.LeaseFor, d, err)
			}
		}
		if addr != "" && cfg.Addr != addr {
			t.Fatalf("DROVER_ADDR=%q gave addr %q", addr, cfg.Addr)
		}
	})
}
