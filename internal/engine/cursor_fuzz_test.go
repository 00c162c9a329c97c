package engine_test

import (
	"crypto/sha256"
	"encoding/base64"
	"math"
	"testing"

	"github.com/droverhq/drover/internal/engine"
	"github.com/droverhq/drover/internal/job"
)

// FuzzDecodeCursor feeds arbitrary strings to DecodeCursor: it must
// never panic, must accept only positive positions, and every cursor it
// accepts must be exactly the one that EncodeCursor writes for the same
// position and order, so that no two cursors name one position and any
// other text is refused.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(engine.EncodeCursor(1, false), false)
	f.Add(engine.EncodeCursor(42, true), true)
	f.Add(engine.EncodeCursor(math.MaxInt64, false), false)
	f.Add("", false)
	f.Add("djE6YXNjOi0x", false) // v1:asc:-1
	f.Add("djE6YXNjOjQ", false)  // v1:asc:4, the old format
	f.Add("not base64 !", true)
	f.Add(engine.EncodeCursor(42, true)+"=", true)
	f.Fuzz(func(t *testing.T, c string, desc bool) {
		id, err := engine.DecodeCursor(c, desc)
		if err != nil {
			if id != 0 {
				t.Fatalf("engine.DecodeCursor(%q) = %d with error %v", c, id, err)
			}
			return
		}
		if id <= 0 {
			t.Fatalf("engine.DecodeCursor(%q) accepted position %d", c, id)
		}
		if engine.EncodeCursor(id, desc) != c {
			t.Fatalf("decodeCursor accepted %q, which EncodeCursor would write as %q", c, engine.EncodeCursor(id, desc))
		}
	})
}

// FuzzCursorTamper changes one byte of a valid cursor, or one bit of what
// it encodes, and requires the result to be refused: a tampered cursor
// never decodes into another position.
func FuzzCursorTamper(f *testing.F) {
	f.Add(int64(1), false, uint16(0), byte('A'), uint16(0))
	f.Add(int64(42), true, uint16(3), byte('_'), uint16(17))
	f.Add(int64(math.MaxInt64), false, uint16(23), byte('-'), uint16(143))
	f.Add(int64(7), false, uint16(5), byte(0), uint16(16)) // flips the low bit of the id
	f.Fuzz(func(t *testing.T, id int64, desc bool, pos uint16, b byte, bit uint16) {
		if id <= 0 {
			id = id&math.MaxInt64 | 1 // any positive position
		}
		c := engine.EncodeCursor(job.ID(id), desc)
		if got, err := engine.DecodeCursor(c, desc); err != nil || got != job.ID(id) {
			t.Fatalf("engine.DecodeCursor(engine.EncodeCursor(%d)) = %d, %v", id, got, err)
		}
		if _, err := engine.DecodeCursor(c, !desc); err == nil {
			t.Fatalf("cursor %q of order desc=%v accepted for the other order", c, desc)
		}

		// One character replaced.
		mut := []byte(c)
		mut[int(pos)%len(mut)] = b
		if string(mut) != c {
			if got, err := engine.DecodeCursor(string(mut), desc); err == nil {
				t.Fatalf("tampered cursor %q (from %q) accepted as position %d", mut, c, got)
			}
		}

		// One bit of the encoded bytes flipped, then re-encoded properly:
		// the check catches what base64 cannot.
		raw, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil {
			t.Fatal(err)
		}
		i := int(bit) % (len(raw) * 8)
		raw[i/8] ^= 1 << (i % 8)
		flipped := base64.RawURLEncoding.EncodeToString(raw)
		if got, err := engine.DecodeCursor(flipped, desc); err == nil {
			t.Fatalf("cursor %q with bit %d flipped (%q) accepted as position %d", c, i, flipped, got)
		}
		if got, err := engine.DecodeCursor(flipped, !desc); err == nil {
			t.Fatalf("cursor %q with bit %d flipped (%q) accepted in the other order as position %d", c, i, flipped, got)
		}
	})
}

// TestCursorFormat pins the cursor's format: what it round-trips, what it
// refuses, and that an error says nothing about which part was wrong.
func TestCursorFormat(t *testing.T) {
	t.Parallel()
	for _, id := range []job.ID{1, 2, 255, 256, 1 << 40, math.MaxInt64} {
		for _, desc := range []bool{false, true} {
			c := engine.EncodeCursor(id, desc)
			if len(c) != 24 {
				t.Errorf("engine.EncodeCursor(%d, %v) = %q, want 24 characters", id, desc, c)
			}
			if got, err := engine.DecodeCursor(c, desc); err != nil || got != id {
				t.Errorf("engine.DecodeCursor(engine.EncodeCursor(%d, %v)) = %d, %v", id, desc, got, err)
			}
		}
	}
	// The documented format, made here independently: a cursor made so
	// decodes, which pins the format that clients hold across upgrades.
	head := []byte{2, 1, 0, 0, 0, 0, 0, 0, 0x01, 0x02}
	sum := sha256.Sum256(append([]byte("drover list cursor\x00"), head...))
	if got, err := engine.DecodeCursor(base64.RawURLEncoding.EncodeToString(append(head, sum[:8]...)), true); err != nil || got != 0x0102 {
		t.Errorf("a cursor made by the documented format decodes as %d, %v; want 258", got, err)
	}
	if c := engine.EncodeCursor(0x0102, true); c != base64.RawURLEncoding.EncodeToString(append(head, sum[:8]...)) {
		t.Errorf("EncodeCursor(258, desc) = %q, not the documented format", c)
	}

	valid := engine.EncodeCursor(42, false)
	_, badCursor := engine.DecodeCursor("", false)
	raw, _ := base64.RawURLEncoding.DecodeString(valid)
	reencode := func(edit func(b []byte) []byte) string {
		return base64.RawURLEncoding.EncodeToString(edit(append([]byte(nil), raw...)))
	}
	for _, tc := range []struct {
		name, cursor string
	}{
		{"empty", ""},
		{"old v1 format", base64.RawURLEncoding.EncodeToString([]byte("v1:asc:42"))},
		{"id edited", reencode(func(b []byte) []byte { b[9]++; return b })},
		{"check edited", reencode(func(b []byte) []byte { b[17] ^= 0x80; return b })},
		{"version edited", reencode(func(b []byte) []byte { b[0] = 3; return b })},
		{"order byte out of range", reencode(func(b []byte) []byte { b[1] = 2; return b })},
		{"truncated", valid[:len(valid)-1]},
		{"a byte appended", reencode(func(b []byte) []byte { return append(b, 0) })},
		{"padded", valid + "=="},
		{"standard base64 alphabet", base64.RawStdEncoding.EncodeToString(raw) + "+"},
	} {
		_, err := engine.DecodeCursor(tc.cursor, false)
		if err == nil {
			t.Errorf("%s: DecodeCursor(%q) accepted it", tc.name, tc.cursor)
		} else if err.Error() != badCursor.Error() {
			t.Errorf("%s: DecodeCursor(%q) = %v, want the one answer %q", tc.name, tc.cursor, err, badCursor)
		}
	}
	// A zero or negative position is never written, even with a valid
	// check.
	for _, id := range []int64{0, -1, math.MinInt64} {
		b := make([]byte, 10)
		b[0] = 2 // the version
		for i := range 8 {
			b[2+i] = byte(uint64(id) >> (56 - 8*i)) //nolint:gosec // G115: the test wants the bits
		}
		sum := sha256.Sum256(append([]byte("drover list cursor\x00"), b...))
		c := base64.RawURLEncoding.EncodeToString(append(b, sum[:8]...))
		if _, err := engine.DecodeCursor(c, false); err == nil || err.Error() != badCursor.Error() {
			t.Errorf("cursor of position %d: %v, want %q", id, err, badCursor)
		}
	}
}
