package httpapi

import (
	"encoding/json"
	"testing"
	"time"
)

// FuzzDuration checks the wire form of durations: whatever UnmarshalJSON
// accepts was a JSON string that time.ParseDuration reads as the same
// value, and marshals back to a form that decodes to it again.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{`"1.5s"`, `"250ms"`, `"-1h"`, `"0"`, `"9223372036854775807ns"`, `"9223372036854775808ns"`,
		`"1µs"`, `"1e3s"`, `""`, `30`, `null`, `"\u0031s"`, "\"1s\xff\"", `"1h2m3s4ms5us6ns"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var d Duration
		if err := d.UnmarshalJSON(in); err != nil {
			if d != 0 {
				t.Fatalf("UnmarshalJSON(%q) set %v with error %v", in, time.Duration(d), err)
			}
			return
		}
		var s string
		if err := json.Unmarshal(in, &s); err != nil {
			t.Fatalf("UnmarshalJSON accepted %q, which is not a JSON string", in)
		}
		want, err := time.ParseDuration(s)
		if err != nil || Duration(want) != d {
			t.Fatalf("UnmarshalJSON(%q) = %v; time.ParseDuration(%q) = %v, %v", in, time.Duration(d), s, want, err)
		}
		out, err := d.MarshalJSON()
		if err != nil {
			t.Fatalf("MarshalJSON(%v): %v", time.Duration(d), err)
		}
		var back Duration
		if err := back.UnmarshalJSON(out); err != nil || back != d {
			t.Fatalf("round trip of %v through %s gave %v, %v", time.Duration(d), out, time.Duration(back), err)
		}
	})
}
