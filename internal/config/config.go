// Package config holds the server's settings: the Config struct, its
// defaults, Validate, and Load, which reads them from (highest precedence
// first) command-line flags, DROVER_* environment variables, an optional
// YAML file and the defaults.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/providers/posflag"
	"github.com/knadh/koanf/v2"
	"github.com/spf13/pflag"
)

// Config is the server's configuration. Keys are the snake_case koanf tags:
// a key k is set by the flag --k (with dashes), by the variable
// DROVER_K (upper case) and by k in the YAML file.
type Config struct {
	// Addr is the HOST:PORT to listen on.
	Addr string `koanf:"addr"`
	// DataDir is the embedded store's directory.
	DataDir string `koanf:"data_dir"`
	// DatabaseURL selects PostgreSQL instead of the embedded store.
	DatabaseURL string `koanf:"database_url"`
	// DatabaseSchema, when set, is the PostgreSQL schema of Drover's
	// tables (created by the migrations); else the URL's search_path.
	DatabaseSchema string `koanf:"database_schema"`
	// NoMigrate stops the server from applying PostgreSQL migrations at
	// start (run `drover migrate` instead).
	NoMigrate bool `koanf:"no_migrate"`
	// NodeID names this node in leader election and in the notifications
	// it sends other nodes; empty means hostname-pid. Unique per node.
	NodeID string `koanf:"node_id"`
	// Insecure allows listening on a non-loopback address without
	// authentication.
	Insecure bool `koanf:"insecure"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `koanf:"log_level"`
	// LogFormat is json or text.
	LogFormat string `koanf:"log_format"`
	// ShutdownTimeout bounds the graceful stop on SIGTERM.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// MaxArgsBytes limits job args (and outputs).
	MaxArgsBytes int `koanf:"max_args_bytes"`
	// LeaseFor is the default lease length.
	LeaseFor time.Duration `koanf:"lease_for"`
	// Retention of finished jobs; zero keeps them forever.
	RetainCompleted time.Duration `koanf:"retain_completed"`
	RetainCancelled time.Duration `koanf:"retain_cancelled"`
	RetainDiscarded time.Duration `koanf:"retain_discarded"`
	// MaxRequests limits API requests in progress; beyond it the server
	// answers 429. MaxLeaseWaiters limits lease calls (long polls) apart.
	MaxRequests     int `koanf:"max_requests"`
	MaxLeaseWaiters int `koanf:"max_lease_waiters"`
	// MaxRequestBytes limits the request bodies in progress, by their
	// declared length (a body of unknown length counts as the largest
	// body allowed); beyond it the server answers 429. Zero means a
	// thirty-second of MemoryLimit, or 256 MiB without one.
	MaxRequestBytes ByteSize `koanf:"max_request_bytes"`
	// MemoryLimit caps the server's memory: it sets the Go runtime's soft
	// memory limit (7/8 of it, leaving room for the binary and what the
	// runtime does not count), sizes MaxRequestBytes, and makes admission
	// refuse new requests (429) while the live heap is above 5/8 of it,
	// so that the server refuses work rather than grow. Zero means no cap
	// of Drover's own (GOMEMLIMIT still applies to the runtime).
	MemoryLimit ByteSize `koanf:"memory_limit"`
	// ReadHeaderTimeout bounds how long a client may take to send a
	// request's headers; a slower connection is closed (the defence
	// against slowloris clients). Bodies have their own limit of 5s.
	ReadHeaderTimeout time.Duration `koanf:"read_header_timeout"`
	// DebugAddr, when set, serves Go's profiler (net/http/pprof) on this
	// separate address, which must be loopback unless Insecure.
	DebugAddr string `koanf:"debug_addr"`
	// GraphQLIntrospection allows GraphQL introspection (__schema,
	// __type), which the query page and GraphQL tools use to show the
	// schema. The schema is public (api/graphql in the source), so it is
	// on by default; turn it off to hide it from clients.
	GraphQLIntrospection bool `koanf:"graphql_introspection"`
	// GraphQLMaxDepth, GraphQLMaxComplexity and GraphQLMaxAliases limit a
	// GraphQL document: how deeply its selections nest, its complexity
	// (each field costs one plus its selections; a list of jobs costs its
	// page size times one job's selection), and its aliased fields.
	GraphQLMaxDepth      int `koanf:"graphql_max_depth"`
	GraphQLMaxComplexity int `koanf:"graphql_max_complexity"`
	GraphQLMaxAliases    int `koanf:"graphql_max_aliases"`
	// Version is the running binary's version, shown in the API document;
	// set by the command, not by users.
	Version string `koanf:"-"`
	// NoSync turns off fsync on commit (tests and benchmarks only: an
	// acknowledged write may be lost on power failure).
	NoSync bool `koanf:"unsafe_no_sync"`
}

// Default returns the default configuration.
func Default() Config {
	return Config{
		Addr:              "127.0.0.1:8080",
		DataDir:           "./drover-data",
		LogLevel:          "info",
		LogFormat:         "json",
		ShutdownTimeout:   30 * time.Second,
		MaxArgsBytes:      1 << 20,
		LeaseFor:          30 * time.Second,
		MaxRequests:       512,
		MaxLeaseWaiters:   10_000,
		ReadHeaderTimeout: 10 * time.Second,
		RetainCompleted:   24 * time.Hour,
		RetainCancelled:   7 * 24 * time.Hour,
		RetainDiscarded:   7 * 24 * time.Hour,

		GraphQLIntrospection: true,
		GraphQLMaxDepth:      12,
		GraphQLMaxComplexity: 50_000,
		GraphQLMaxAliases:    30,
	}
}

// Flags registers the serve flags on fs, with the defaults as their
// defaults.
func Flags(fs *pflag.FlagSet) {
	d := Default()
	fs.String("config", "", "YAML file of settings (keys as the flags, with underscores)")
	fs.String("addr", d.Addr, "HOST:PORT to listen on (DROVER_ADDR)")
	fs.String("data-dir", d.DataDir, "directory of the embedded store (DROVER_DATA_DIR)")
	fs.String("database-url", "", "PostgreSQL URL; replaces the embedded store (DROVER_DATABASE_URL)")
	fs.String("database-schema", "", "PostgreSQL schema for Drover's tables; default: the URL's search_path (DROVER_DATABASE_SCHEMA)")
	fs.Bool("no-migrate", false, "do not apply PostgreSQL migrations at start; run `drover migrate` (DROVER_NO_MIGRATE)")
	fs.String("node-id", "", "this node's name in leader election; default hostname-pid (DROVER_NODE_ID)")
	fs.Bool("insecure", false, "allow a non-loopback address without authentication (DROVER_INSECURE)")
	fs.String("log-level", d.LogLevel, "debug, info, warn or error (DROVER_LOG_LEVEL)")
	fs.String("log-format", d.LogFormat, "json or text (DROVER_LOG_FORMAT)")
	fs.Duration("shutdown-timeout", d.ShutdownTimeout, "how long a graceful stop may take (DROVER_SHUTDOWN_TIMEOUT)")
	fs.Int("max-args-bytes", d.MaxArgsBytes, "limit on the size of job args (DROVER_MAX_ARGS_BYTES)")
	fs.Duration("lease-for", d.LeaseFor, "default lease length (DROVER_LEASE_FOR)")
	fs.Duration("retain-completed", d.RetainCompleted, "keep completed jobs this long; 0 keeps them (DROVER_RETAIN_COMPLETED)")
	fs.Duration("retain-cancelled", d.RetainCancelled, "keep cancelled jobs this long; 0 keeps them (DROVER_RETAIN_CANCELLED)")
	fs.Duration("retain-discarded", d.RetainDiscarded, "keep discarded jobs this long; 0 keeps them (DROVER_RETAIN_DISCARDED)")
	fs.Int("max-requests", d.MaxRequests, "API requests in progress before the server answers 429 (DROVER_MAX_REQUESTS)")
	fs.Int("max-lease-waiters", d.MaxLeaseWaiters, "lease calls (long polls) in progress before 429 (DROVER_MAX_LEASE_WAITERS)")
	maxBytes, memLimit := d.MaxRequestBytes, d.MemoryLimit
	fs.Var(&maxBytes, "max-request-bytes", "request bodies in progress before 429, as in 256MiB; default: memory-limit/32, or 256MiB (DROVER_MAX_REQUEST_BYTES)")
	fs.Var(&memLimit, "memory-limit", "cap on the server's memory, as in 1GiB: Go's soft limit, and 429 rather than growth near it; default: none (DROVER_MEMORY_LIMIT)")
	fs.Duration("read-header-timeout", d.ReadHeaderTimeout, "close connections that take longer to send a request's headers (DROVER_READ_HEADER_TIMEOUT)")
	fs.String("debug-addr", "", "serve Go's profiler (/debug/pprof) on this HOST:PORT (DROVER_DEBUG_ADDR)")
	fs.Bool("graphql-introspection", d.GraphQLIntrospection, "allow GraphQL introspection (__schema, __type); --graphql-introspection=false hides the schema (DROVER_GRAPHQL_INTROSPECTION)")
	fs.Int("graphql-max-depth", d.GraphQLMaxDepth, "deepest nesting of a GraphQL document's selections (DROVER_GRAPHQL_MAX_DEPTH)")
	fs.Int("graphql-max-complexity", d.GraphQLMaxComplexity, "largest complexity of a GraphQL operation (DROVER_GRAPHQL_MAX_COMPLEXITY)")
	fs.Int("graphql-max-aliases", d.GraphQLMaxAliases, "most aliased fields in a GraphQL document (DROVER_GRAPHQL_MAX_ALIASES)")
	fs.Bool("unsafe-no-sync", false, "do not fsync commits: acknowledged jobs may be lost on power failure (DROVER_UNSAFE_NO_SYNC)")
}

// Load reads the configuration: defaults, then the YAML file named by
// --config (or DROVER_CONFIG), then DROVER_* variables from environ, then
// the flags that were set on fs. It validates the result.
func Load(fs *pflag.FlagSet, environ []string) (Config, error) {
	k := koanf.New(".")
	envMap := map[string]string{}
	for _, kv := range environ {
		if name, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, "DROVER_") {
			envMap[name] = val
		}
	}
	path, _ := fs.GetString("config")
	if path == "" {
		path = envMap["DROVER_CONFIG"]
	}
	if path != "" {
		if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
			return Config{}, fmt.Errorf("read config file %s: %w", path, err)
		}
	}
	envProvider := env.Provider(".", env.Opt{
		Prefix: "DROVER_",
		TransformFunc: func(key, value string) (string, any) {
			return strings.ToLower(strings.TrimPrefix(key, "DROVER_")), value
		},
		EnvironFunc: func() []string { return environ },
	})
	if err := k.Load(envProvider, nil); err != nil {
		return Config{}, fmt.Errorf("read environment: %w", err)
	}
	// Only flags set on the command line override: the defaults are
	// applied below, under everything else.
	fp := posflag.ProviderWithFlag(fs, ".", k, func(f *pflag.Flag) (string, any) {
		if !f.Changed {
			return "", nil
		}
		return strings.ReplaceAll(f.Name, "-", "_"), posflag.FlagVal(fs, f)
	})
	if err := k.Load(fp, nil); err != nil {
		return Config{}, fmt.Errorf("read flags: %w", err)
	}
	cfg := Default()
	if err := k.UnmarshalWithConf("", &cfg, koanf.UnmarshalConf{Tag: "koanf"}); err != nil {
		return Config{}, fmt.Errorf("settings: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// Validate checks the configuration and reports every problem at once.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("addr %q: %w", c.Addr, err))
	}
	if c.MaxRequests < 1 || c.MaxLeaseWaiters < 1 {
		errs = append(errs, fmt.Errorf("max_requests and max_lease_waiters must be at least 1"))
	}
	if c.MemoryLimit != 0 && c.MemoryLimit < MinMemoryLimit {
		errs = append(errs, fmt.Errorf("memory_limit %s: want 0 (no cap) or at least %s", c.MemoryLimit, ByteSize(MinMemoryLimit)))
	}
	if c.MaxRequestBytes < 0 || (c.MaxRequestBytes > 0 && c.MaxRequestBytes < 64<<10) {
		errs = append(errs, fmt.Errorf("max_request_bytes %s: want 0 (the default) or at least 64KiB", c.MaxRequestBytes))
	}
	if c.ReadHeaderTimeout < 100*time.Millisecond || c.ReadHeaderTimeout > 10*time.Minute {
		errs = append(errs, fmt.Errorf("read_header_timeout %s: want 100ms to 10m", c.ReadHeaderTimeout))
	}
	if c.DebugAddr != "" {
		if host, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("debug_addr %q: %w", c.DebugAddr, err))
		} else if !c.Insecure && !IsLoopback(host) {
			errs = append(errs, fmt.Errorf("debug_addr %q is not a loopback address: the profiler must not be exposed (pass --insecure to insist)", c.DebugAddr))
		}
	}
	for _, l := range []struct {
		name   string
		v, max int
	}{{"graphql_max_depth", c.GraphQLMaxDepth, 1000}, {"graphql_max_complexity", c.GraphQLMaxComplexity, 100_000_000}, {"graphql_max_aliases", c.GraphQLMaxAliases, 100_000}} {
		if l.v < 1 || l.v > l.max {
			errs = append(errs, fmt.Errorf("%s %d: want 1 to %d", l.name, l.v, l.max))
		}
	}
	if c.DatabaseURL == "" && c.DataDir == "" {
		errs = append(errs, errors.New("data_dir must not be empty"))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("log_format %q: want json or text", c.LogFormat))
	}
	if c.ShutdownTimeout < 100*time.Millisecond {
		errs = append(errs, fmt.Errorf("shutdown_timeout %s: want at least 100ms (give a unit, as in \"30s\": a bare number means nanoseconds)", c.ShutdownTimeout))
	}
	if c.MaxArgsBytes < 1024 || c.MaxArgsBytes > 64<<20 {
		errs = append(errs, fmt.Errorf("max_args_bytes %d: want 1024 to %d", c.MaxArgsBytes, 64<<20))
	}
	if c.LeaseFor < time.Second || c.LeaseFor > 24*time.Hour {
		errs = append(errs, fmt.Errorf("lease_for %s: want 1s to 24h", c.LeaseFor))
	}
	for _, r := range []struct {
		name string
		d    time.Duration
	}{{"retain_completed", c.RetainCompleted}, {"retain_cancelled", c.RetainCancelled}, {"retain_discarded", c.RetainDiscarded}} {
		switch {
		case r.d < 0:
			errs = append(errs, fmt.Errorf("%s must not be negative", r.name))
		case r.d > 0 && r.d < time.Second:
			errs = append(errs, fmt.Errorf("%s %s: want 0 (keep forever) or at least 1s (give a unit, as in \"24h\": a bare number means nanoseconds)", r.name, r.d))
		}
	}
	return errors.Join(errs...)
}

// MinMemoryLimit is the smallest MemoryLimit accepted: below it the
// server could not hold its own working set.
const MinMemoryLimit = 64 << 20

// RequestBytes returns the limit on request bodies in progress:
// MaxRequestBytes when set, else a thirty-second of MemoryLimit, else
// 256 MiB. It is never below 64 KiB. A thirty-second, because each byte
// of a body in flight costs about ten bytes of memory while it is read,
// decoded, validated, stored and echoed back in the response (measured
// with large batch enqueues by e2e's TestOverloadOpenLoop), so bodies
// take about a third of the limit, and the garbage collector and the rest
// of the server need the remainder.
func (c *Config) RequestBytes() int64 {
	switch {
	case c.MaxRequestBytes > 0:
		return int64(c.MaxRequestBytes)
	case c.MemoryLimit > 0:
		return max(int64(c.MemoryLimit)/32, 64<<10)
	}
	return 256 << 20
}

// ErrExposed is wrapped by CheckExposure's error.
var ErrExposed = errors.New("refusing to serve without authentication beyond this machine")

// CheckExposure refuses a non-loopback address when no API token exists
// (authConfigured is false), unless Insecure is set: without tokens anyone
// who can reach the port could run and delete jobs.
func (c *Config) CheckExposure(authConfigured bool) error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("addr %q: %w", c.Addr, err)
	}
	if c.Insecure || authConfigured || IsLoopback(host) {
		return nil
	}
	return fmt.Errorf("%w: addr %q is not a loopback address and no authentication is configured: listen on 127.0.0.1, create a token with drover token create, or pass --insecure", ErrExposed, c.Addr)
}

// IsLoopback reports whether host (a name or an IP, without port) only
// reaches this machine. The empty host means every interface.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ParseLevel parses a log level name.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log_level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
