package config_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/droverhq/drover/internal/config"
)

func TestParseByteSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want config.ByteSize
	}{
		{"0", 0},
		{"1024", 1024},
		{"512B", 512},
		{"64KiB", 64 << 10},
		{"512MiB", 512 << 20},
		{"512mib", 512 << 20},
		{"2 GiB", 2 << 30},
		{"1TiB", 1 << 40},
		{"1KB", 1000},
		{"500MB", 500_000_000},
		{"3GB", 3_000_000_000},
		{" 7 tb ", 7_000_000_000_000},
	}
	for _, tt := range tests {
		got, err := config.ParseByteSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseByteSizeRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "MiB", "-1", "-1GiB", "1.5GiB", "12 parsecs", "1GiBs", "9223372036854775808", "8388608TiB"} {
		if got, err := config.ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestByteSizeStringReadsBack(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   config.ByteSize
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1536, "1536"}, {256 << 20, "256MiB"}, {3 << 30, "3GiB"}, {1 << 40, "1TiB"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		back, err := config.ParseByteSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in.String(), back, err, int64(tt.in))
		}
	}
}

func TestLoadReadsOverloadSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		args, env     []string
		file          string
		wantMem       config.ByteSize
		wantBytes     config.ByteSize
		wantHeader    time.Duration
		wantEffective int64
	}{
		{name: "defaults", wantHeader: 10 * time.Second, wantEffective: 256 << 20},
		{name: "flags with units", args: []string{"--memory-limit", "1GiB", "--max-request-bytes", "32MiB", "--read-header-timeout", "3s"},
			wantMem: 1 << 30, wantBytes: 32 << 20, wantHeader: 3 * time.Second, wantEffective: 32 << 20},
		{name: "environment", env: []string{"DROVER_MEMORY_LIMIT=512MiB", "DROVER_READ_HEADER_TIMEOUT=500ms"},
			wantMem: 512 << 20, wantHeader: 500 * time.Millisecond, wantEffective: 16 << 20},
		{name: "file with a bare number and a unit", file: "memory_limit: 268435456\nmax_request_bytes: 1MB\n",
			wantMem: 256 << 20, wantBytes: 1_000_000, wantHeader: 10 * time.Second, wantEffective: 1_000_000},
		{name: "flag over environment", args: []string{"--memory-limit", "2GiB"}, env: []string{"DROVER_MEMORY_LIMIT=1GiB"},
			wantMem: 2 << 30, wantHeader: 10 * time.Second, wantEffective: 64 << 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			got := mustLoad(t, args, tt.env)
			if got.MemoryLimit != tt.wantMem || got.MaxRequestBytes != tt.wantBytes || got.ReadHeaderTimeout != tt.wantHeader {
				t.Errorf("memory_limit %s, max_request_bytes %s, read_header_timeout %s; want %s, %s, %s",
					got.MemoryLimit, got.MaxRequestBytes, got.ReadHeaderTimeout, tt.wantMem, tt.wantBytes, tt.wantHeader)
			}
			if eff := got.RequestBytes(); eff != tt.wantEffective {
				t.Errorf("RequestBytes() = %d, want %d", eff, tt.wantEffective)
			}
		})
	}
}

func TestLoadRejectsBadOverloadSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     []string
		wantKey string
	}{
		{name: "memory_limit not a size", env: []string{"DROVER_MEMORY_LIMIT=lots"}, wantKey: "memory_limit"},
		{name: "memory_limit too small", args: []string{"--memory-limit", "16MiB"}, wantKey: "memory_limit"},
		{name: "max_request_bytes too small", env: []string{"DROVER_MAX_REQUEST_BYTES=1KiB"}, wantKey: "max_request_bytes"},
		{name: "read_header_timeout zero", env: []string{"DROVER_READ_HEADER_TIMEOUT=0s"}, wantKey: "read_header_timeout"},
		{name: "read_header_timeout too long", args: []string{"--read-header-timeout", "1h"}, wantKey: "read_header_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(t, tt.args, tt.env)
			if err == nil || !strings.Contains(err.Error(), tt.wantKey) {
				t.Errorf("Load(args %q, env %q) = %v, want an error naming %s", tt.args, tt.env, err, tt.wantKey)
			}
		})
	}
}

func TestMemoryLimitFlagRejectsBadSize(t *testing.T) {
	t.Parallel()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	config.Flags(fs)
	if err := fs.Parse([]string{"--memory-limit", "1.5GiB"}); err == nil || !strings.Contains(err.Error(), "memory-limit") {
		t.Errorf("parse --memory-limit 1.5GiB = %v, want an error naming the flag", err)
	}
}
