package httpapi

import (
	"testing"
)

// FuzzDecodeCursor feeds arbitrary strings to the cursor decoder: it must
// never panic, must accept only positive positions, and every cursor it
// accepts must be one that encodeCursor makes for the same order.
func FuzzDecodeCursor(f *testing.F) {
	f.Add(encodeCursor(1, false), false)
	f.Add(encodeCursor(42, true), true)
	f.Add("", false)
	f.Add("djE6YXNjOi0x", false) // v1:asc:-1
	f.Add("not base64 !", true)
	f.Add("djE6YXNjOjAwNw", false) // v1:asc:007, not canonical
	f.Fuzz(func(t *testing.T, c string, desc bool) {
		id, err := decodeCursor(c, desc)
		if err != nil {
			return
		}
		if id <= 0 {
			t.Fatalf("decodeCursor(%q) accepted position %d", c, id)
		}
		if encodeCursor(id, desc) != c {
			t.Fatalf("decodeCursor accepted %q, which encodeCursor would write as %q", c, encodeCursor(id, desc))
		}
	})
}
