package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ByteSize is an amount of memory in bytes. As text it is a whole number
// with an optional unit: B, the binary KiB, MiB, GiB and TiB (as
// GOMEMLIMIT takes them), or the decimal KB, MB, GB and TB; units are case
// insensitive and may follow a space. A bare number is bytes. It
// implements encoding.TextUnmarshaler (so settings files and DROVER_*
// variables can use units) and pflag.Value (so flags can).
type ByteSize int64

// sizeUnits maps the lower-case units to their factors.
var sizeUnits = map[string]int64{
	"":    1,
	"b":   1,
	"kib": 1 << 10,
	"mib": 1 << 20,
	"gib": 1 << 30,
	"tib": 1 << 40,
	"kb":  1e3,
	"mb":  1e6,
	"gb":  1e9,
	"tb":  1e12,
}

// ParseByteSize parses s as a ByteSize. It refuses negative numbers,
// fractions, unknown units and sizes past the int64 range.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit, as in 512MiB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	unit := strings.ToLower(strings.TrimSpace(t[i:]))
	f, ok := sizeUnits[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (want B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)", s, t[i:])
	}
	if n > math.MaxInt64/f {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	return ByteSize(n * f), nil
}

// String returns b in the largest binary unit that divides it exactly,
// as in 512MiB; ParseByteSize reads it back.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		f    int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.f == 0 {
			return strconv.FormatInt(int64(b)/u.f, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// UnmarshalText parses text with ParseByteSize.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// Set parses s with ParseByteSize, for pflag.
func (b *ByteSize) Set(s string) error { return b.UnmarshalText([]byte(s)) }

// Type names the flag's value type in help text.
func (b *ByteSize) Type() string { return "size" }
