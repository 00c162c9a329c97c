package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/droverhq/drover/internal/config"
)

// load parses args with the serve flags and loads the configuration with
// environ as the environment.
func load(t *testing.T, args, environ []string) (config.Config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	config.Flags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags %q: %v", args, err)
	}
	return config.Load(fs, environ)
}

// mustLoad is load for configurations that must be valid.
func mustLoad(t *testing.T, args, environ []string) config.Config {
	t.Helper()
	cfg, err := load(t, args, environ)
	if err != nil {
		t.Fatalf("Load(args %q, env %q): %v", args, environ, err)
	}
	return cfg
}

// writeFile writes a YAML settings file into a fresh directory and returns
// its path.
func writeFile(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drover.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadWithNothingSetGivesDefaults(t *testing.T) {
	t.Parallel()
	got := mustLoad(t, nil, nil)
	if want := config.Default(); got != want {
		t.Errorf("Load() = %+v, want the defaults %+v", got, want)
	}
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	d := config.Default()
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v, want nil", err)
	}
}

func TestLoadPrecedence(t *testing.T) {
	t.Parallel()
	// Each layer sets addr; only the file sets log_level and only the
	// environment sets data_dir, so a lower layer's other keys must
	// survive a higher layer.
	file := writeFile(t, "addr: 127.0.0.2:2\nlog_level: debug\nlease_for: 45s\n")
	env := []string{"DROVER_ADDR=127.0.0.3:3", "DROVER_DATA_DIR=/from/env", "DROVER_LEASE_FOR=50s"}
	tests := []struct {
		name         string
		args         []string
		env          []string
		wantAddr     string
		wantLevel    string
		wantDataDir  string
		wantLeaseFor time.Duration
	}{
		{
			name:     "defaults only",
			wantAddr: "127.0.0.1:8080", wantLevel: "info", wantDataDir: "./drover-data", wantLeaseFor: 30 * time.Second,
		},
		{
			name:     "file over defaults",
			args:     []string{"--config", file},
			wantAddr: "127.0.0.2:2", wantLevel: "debug", wantDataDir: "./drover-data", wantLeaseFor: 45 * time.Second,
		},
		{
			name:     "environment over file",
			args:     []string{"--config", file},
			env:      env,
			wantAddr: "127.0.0.3:3", wantLevel: "debug", wantDataDir: "/from/env", wantLeaseFor: 50 * time.Second,
		},
		{
			name:     "set flags over environment",
			args:     []string{"--config", file, "--addr", "127.0.0.4:4", "--lease-for", "55s"},
			env:      env,
			wantAddr: "127.0.0.4:4", wantLevel: "debug", wantDataDir: "/from/env", wantLeaseFor: 55 * time.Second,
		},
		{
			name:     "file named by DROVER_CONFIG",
			env:      []string{"DROVER_CONFIG=" + file},
			wantAddr: "127.0.0.2:2", wantLevel: "debug", wantDataDir: "./drover-data", wantLeaseFor: 45 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := mustLoad(t, tt.args, tt.env)
			if got.Addr != tt.wantAddr {
				t.Errorf("Addr = %q, want %q", got.Addr, tt.wantAddr)
			}
			if got.LogLevel != tt.wantLevel {
				t.Errorf("LogLevel = %q, want %q", got.LogLevel, tt.wantLevel)
			}
			if got.DataDir != tt.wantDataDir {
				t.Errorf("DataDir = %q, want %q", got.DataDir, tt.wantDataDir)
			}
			if got.LeaseFor != tt.wantLeaseFor {
				t.Errorf("LeaseFor = %s, want %s", got.LeaseFor, tt.wantLeaseFor)
			}
		})
	}
}

func TestLoadFlagAtDefaultDoesNotOverrideEnvironment(t *testing.T) {
	t.Parallel()
	env := []string{"DROVER_LOG_LEVEL=warn", "DROVER_ADDR=127.0.0.9:9"}
	// --log-level is not given, so its default (info) must not hide the
	// environment; --insecure is given but is a different key.
	got := mustLoad(t, []string{"--insecure"}, env)
	if got.LogLevel != "warn" {
		t.Errorf("LogLevel = %q, want %q from the environment", got.LogLevel, "warn")
	}
	if got.Addr != "127.0.0.9:9" {
		t.Errorf("Addr = %q, want %q from the environment", got.Addr, "127.0.0.9:9")
	}
}

func TestLoadFlagSetToDefaultValueStillOverridesEnvironment(t *testing.T) {
	t.Parallel()
	// A flag the user typed wins even when its value equals the default.
	got := mustLoad(t, []string{"--log-level", "info"}, []string{"DROVER_LOG_LEVEL=warn"})
	if got.LogLevel != "info" {
		t.Errorf("LogLevel = %q, want %q from the flag", got.LogLevel, "info")
	}
}

func TestLoadIgnoresOtherEnvironmentVariables(t *testing.T) {
	t.Parallel()
	env := []string{"ADDR=0.0.0.0:1", "LOG_LEVEL=nonsense", "DROVERADDR=0.0.0.0:2", "DROVER_NO_EQUALS_SIGN", "PATH=/usr/bin"}
	got := mustLoad(t, nil, env)
	if want := config.Default(); got != want {
		t.Errorf("Load() = %+v, want the defaults %+v", got, want)
	}
}

func TestLoadParsesDurationStrings(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "retain_completed: 90s\nretain_cancelled: 2h30m\nshutdown_timeout: 1m\n")
	env := []string{"DROVER_LEASE_FOR=90s", "DROVER_RETAIN_DISCARDED=0s", "DROVER_SHUTDOWN_TIMEOUT=1m30s"}
	got := mustLoad(t, []string{"--config", file}, env)
	checks := []struct {
		name      string
		got, want time.Duration
	}{
		{"lease_for from env", got.LeaseFor, 90 * time.Second},
		{"retain_discarded from env", got.RetainDiscarded, 0},
		{"shutdown_timeout env over file", got.ShutdownTimeout, 90 * time.Second},
		{"retain_completed from file", got.RetainCompleted, 90 * time.Second},
		{"retain_cancelled from file", got.RetainCancelled, 150 * time.Minute},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %s, want %s", c.name, c.got, c.want)
		}
	}
}

func TestLoadParsesBooleansAndIntegersFromStrings(t *testing.T) {
	t.Parallel()
	env := []string{"DROVER_UNSAFE_NO_SYNC=true", "DROVER_MAX_ARGS_BYTES=2048"}
	got := mustLoad(t, nil, env)
	if !got.NoSync {
		t.Error("NoSync = false, want true from DROVER_UNSAFE_NO_SYNC=true")
	}
	if got.MaxArgsBytes != 2048 {
		t.Errorf("MaxArgsBytes = %d, want 2048", got.MaxArgsBytes)
	}
}

// TestLoadGraphQLSettings checks the GraphQL settings: introspection on
// by default and turned off by flag or environment, and the limits read
// from each source.
func TestLoadGraphQLSettings(t *testing.T) {
	t.Parallel()
	d := mustLoad(t, nil, nil)
	if !d.GraphQLIntrospection || d.GraphQLMaxDepth != 12 || d.GraphQLMaxComplexity != 50_000 || d.GraphQLMaxAliases != 30 {
		t.Errorf("defaults: introspection %t, depth %d, complexity %d, aliases %d", d.GraphQLIntrospection, d.GraphQLMaxDepth, d.GraphQLMaxComplexity, d.GraphQLMaxAliases)
	}
	if got := mustLoad(t, []string{"--graphql-introspection=false"}, nil); got.GraphQLIntrospection {
		t.Error("--graphql-introspection=false left introspection on")
	}
	if got := mustLoad(t, nil, []string{"DROVER_GRAPHQL_INTROSPECTION=false"}); got.GraphQLIntrospection {
		t.Error("DROVER_GRAPHQL_INTROSPECTION=false left introspection on")
	}
	got := mustLoad(t, []string{"--graphql-max-depth", "7"}, []string{"DROVER_GRAPHQL_MAX_COMPLEXITY=900", "DROVER_GRAPHQL_MAX_ALIASES=4"})
	if got.GraphQLMaxDepth != 7 || got.GraphQLMaxComplexity != 900 || got.GraphQLMaxAliases != 4 {
		t.Errorf("limits: depth %d, complexity %d, aliases %d; want 7, 900, 4", got.GraphQLMaxDepth, got.GraphQLMaxComplexity, got.GraphQLMaxAliases)
	}
}

func TestLoadRejectsBadValuesNamingTheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     []string
		file    string
		wantKey string
	}{
		{name: "unknown log level in env", env: []string{"DROVER_LOG_LEVEL=loud"}, wantKey: "log_level"},
		{name: "unknown log level flag", args: []string{"--log-level", "verbose"}, wantKey: "log_level"},
		{name: "unknown log format in env", env: []string{"DROVER_LOG_FORMAT=xml"}, wantKey: "log_format"},
		{name: "unknown log format in file", file: "log_format: logfmt\n", wantKey: "log_format"},
		{name: "addr without port", env: []string{"DROVER_ADDR=127.0.0.1"}, wantKey: "addr"},
		{name: "addr garbage flag", args: []string{"--addr", "not an address"}, wantKey: "addr"},
		{name: "negative retain_completed", env: []string{"DROVER_RETAIN_COMPLETED=-1h"}, wantKey: "retain_completed"},
		{name: "negative retain_cancelled", file: "retain_cancelled: -1s\n", wantKey: "retain_cancelled"},
		{name: "negative retain_discarded", args: []string{"--retain-discarded=-5m"}, wantKey: "retain_discarded"},
		{name: "max_args_bytes too small", env: []string{"DROVER_MAX_ARGS_BYTES=1023"}, wantKey: "max_args_bytes"},
		{name: "max_args_bytes too large", args: []string{"--max-args-bytes", "67108865"}, wantKey: "max_args_bytes"},
		{name: "max_args_bytes negative", file: "max_args_bytes: -1\n", wantKey: "max_args_bytes"},
		{name: "max_args_bytes not a number", env: []string{"DROVER_MAX_ARGS_BYTES=lots"}, wantKey: "max_args_bytes"},
		{name: "lease_for too short", env: []string{"DROVER_LEASE_FOR=10ms"}, wantKey: "lease_for"},
		{name: "shutdown_timeout zero", env: []string{"DROVER_SHUTDOWN_TIMEOUT=0s"}, wantKey: "shutdown_timeout"},
		{name: "empty data_dir", env: []string{"DROVER_DATA_DIR="}, wantKey: "data_dir"},
		{name: "graphql_max_depth zero", env: []string{"DROVER_GRAPHQL_MAX_DEPTH=0"}, wantKey: "graphql_max_depth"},
		{name: "graphql_max_complexity negative", args: []string{"--graphql-max-complexity=-1"}, wantKey: "graphql_max_complexity"},
		{name: "graphql_max_aliases too large", file: "graphql_max_aliases: 1000000\n", wantKey: "graphql_max_aliases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := load(t, args, tt.env)
			if err == nil {
				t.Fatalf("Load(args %q, env %q) = nil error, want one naming %s", args, tt.env, tt.wantKey)
			}
			if !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("Load error %q does not name the key %s", err, tt.wantKey)
			}
		})
	}
}

func TestLoadRejectsMissingConfigFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, err := load(t, []string{"--config", path}, nil)
	if err == nil {
		t.Fatalf("Load with --config %s = nil error, want one", path)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load error %v, want one wrapping os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("Load error %q does not name the file %s", err, path)
	}
}

func TestLoadRejectsMalformedConfigFile(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "addr: [unclosed\n")
	if _, err := load(t, []string{"--config", path}, nil); err == nil {
		t.Fatal("Load of a malformed YAML file = nil error, want one")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Addr = "nonsense"
	cfg.LogLevel = "loud"
	cfg.LogFormat = "xml"
	cfg.MaxArgsBytes = 0
	cfg.RetainCompleted = -time.Hour
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, key := range []string{"addr", "log_level", "log_format", "max_args_bytes", "retain_completed"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Validate error does not mention %s:\n%v", key, err)
		}
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate error is a %T, want a joined error (errors.Join)", err)
	}
	if n := len(joined.Unwrap()); n != 5 {
		t.Errorf("Validate joined %d errors, want 5:\n%v", n, err)
	}
}

func TestNonLoopbackAddrNeedsInsecure(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"0.0.0.0:8080", "10.1.2.3:80", ":8080", "[::]:8080", "example.com:80"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			t.Run("refused without tokens", func(t *testing.T) {
				t.Parallel()
				cfg := mustLoad(t, []string{"--addr", addr}, nil)
				err := cfg.CheckExposure(false)
				if !errors.Is(err, config.ErrExposed) {
					t.Fatalf("CheckExposure with --addr %s = %v, want ErrExposed", addr, err)
				}
				for _, want := range []string{"addr", "loopback", "--insecure", "token"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not mention %q", err, want)
					}
				}
			})
			t.Run("refused from the environment too", func(t *testing.T) {
				t.Parallel()
				cfg := mustLoad(t, nil, []string{"DROVER_ADDR=" + addr})
				if err := cfg.CheckExposure(false); err == nil {
					t.Fatalf("DROVER_ADDR=%s accepted without tokens", addr)
				}
			})
			t.Run("accepted once tokens exist", func(t *testing.T) {
				t.Parallel()
				cfg := mustLoad(t, []string{"--addr", addr}, nil)
				if err := cfg.CheckExposure(true); err != nil {
					t.Fatalf("refused with tokens: %v", err)
				}
			})
			t.Run("accepted with DROVER_INSECURE=true", func(t *testing.T) {
				t.Parallel()
				got := mustLoad(t, []string{"--addr", addr}, []string{"DROVER_INSECURE=true"})
				if !got.Insecure || got.Addr != addr || got.CheckExposure(false) != nil {
					t.Errorf("Load = {Addr: %q, Insecure: %v}, want {%q, true}", got.Addr, got.Insecure, addr)
				}
			})
			t.Run("accepted with --insecure", func(t *testing.T) {
				t.Parallel()
				got := mustLoad(t, []string{"--addr", addr, "--insecure"}, []string{"DROVER_INSECURE=false"})
				if !got.Insecure || got.Addr != addr || got.CheckExposure(false) != nil {
					t.Errorf("Load = {Addr: %q, Insecure: %v}, want {%q, true}", got.Addr, got.Insecure, addr)
				}
			})
		})
	}
}

func TestLoopbackAddrNeedsNoInsecure(t *testing.T) {
	t.Parallel()
	for _, addr := range []string{"127.0.0.1:0", "[::1]:8080", "localhost:8080", "127.1.2.3:9"} {
		t.Run(addr, func(t *testing.T) {
			t.Parallel()
			if got := mustLoad(t, []string{"--addr", addr}, nil); got.Addr != addr {
				t.Errorf("Addr = %q, want %q", got.Addr, addr)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want bool
	}{
		{"127.0.0.1", true},
		{"127.0.0.53", true},
		{"::1", true},
		{"localhost", true},
		{"", false}, // every interface
		{"0.0.0.0", false},
		{"::", false},
		{"10.0.0.1", false},
		{"192.168.1.1", false},
		{"example.com", false},
	}
	for _, tt := range tests {
		if got := config.IsLoopback(tt.host); got != tt.want {
			t.Errorf("IsLoopback(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"debug", "info", "warn", "error", "INFO"} {
		if _, err := config.ParseLevel(name); err != nil {
			t.Errorf("ParseLevel(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", "loud", "trace"} {
		_, err := config.ParseLevel(name)
		if err == nil || !strings.Contains(err.Error(), "log_level") {
			t.Errorf("ParseLevel(%q) error = %v, want one naming log_level", name, err)
		}
	}
}

func TestDebugAddrMustBeLoopback(t *testing.T) {
	t.Parallel()
	if cfg := mustLoad(t, []string{"--debug-addr", "127.0.0.1:6060"}, nil); cfg.DebugAddr != "127.0.0.1:6060" {
		t.Fatalf("debug addr %q", cfg.DebugAddr)
	}
	_, err := load(t, []string{"--debug-addr", "0.0.0.0:6060"}, nil)
	if err == nil || !strings.Contains(err.Error(), "debug_addr") {
		t.Fatalf("non-loopback debug addr: %v", err)
	}
	if _, err := load(t, []string{"--debug-addr", "nope"}, nil); err == nil {
		t.Fatal("malformed debug addr accepted")
	}
	if cfg := mustLoad(t, []string{"--debug-addr", "0.0.0.0:6060", "--insecure", "--addr", "0.0.0.0:8080"}, nil); cfg.DebugAddr == "" {
		t.Fatal("--insecure did not allow a non-loopback debug addr")
	}
}
