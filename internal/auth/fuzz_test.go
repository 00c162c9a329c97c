package auth

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzParse checks that Parse accepts exactly the text Format writes:
// whatever it accepts formats back to the same string, so that no two
// strings name one token, and whatever it refuses is ErrMalformed.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"drv_1_abc", "drv_42_" + strings.Repeat("A", 43), "drv_01_abc", "drv_+1_abc", "drv_-1_abc", "drv_0_abc",
		"drv_1_", "drv__abc", "drv_9223372036854775807_x", "drv_9223372036854775808_x", "drv_1_a_b",
		"drv_1_" + strings.Repeat("a", 128), "drv_1_" + strings.Repeat("a", 129), "DRV_1_abc", " drv_1_abc", "drv_1_\xff",
		"drv_١_abc", "drv_1_a\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		id, secret, err := Parse(tok)
		if err != nil {
			if !errors.Is(err, ErrMalformed) || id != 0 || secret != "" {
				t.Fatalf("Parse(%q) = %d, %q, %v", tok, id, secret, err)
			}
			return
		}
		if id <= 0 || secret == "" || len(secret) > 128 {
			t.Fatalf("Parse(%q) accepted id %d, secret %q", tok, id, secret)
		}
		if got := Format(id, secret); got != tok {
			t.Fatalf("Parse(%q) = %d, %q, which Format writes as %q", tok, id, secret, got)
		}
	})
}

// FuzzVerify checks the secret check: a secret matches its own hash, and
// a secret or a hash that differs in any byte does not.
func FuzzVerify(f *testing.F) {
	f.Add("s3cret", uint16(0), byte('x'), uint16(0))
	f.Add(strings.Repeat("A", 43), uint16(42), byte('B'), uint16(63))
	f.Add("", uint16(1), byte(0), uint16(5))
	f.Add("\xff\x00", uint16(1), byte(0xfe), uint16(9))
	f.Fuzz(func(t *testing.T, secret string, pos uint16, b byte, hpos uint16) {
		h := Hash(secret)
		if len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
			t.Fatalf("Hash(%q) = %q, not 64 lower-case hex digits", secret, h)
		}
		if !Verify(secret, h) {
			t.Fatalf("Verify refused %q against its own hash", secret)
		}
		if secret != "" {
			mut := []byte(secret)
			mut[int(pos)%len(mut)] = b
			if string(mut) != secret && Verify(string(mut), h) {
				t.Fatalf("Verify accepted %q for the hash of %q", mut, secret)
			}
		}
		if Verify(secret+"x", h) || (len(secret) > 0 && Verify(secret[:len(secret)-1], h)) {
			t.Fatalf("Verify accepted a longer or shorter secret than %q", secret)
		}
		mh := []byte(h)
		i := int(hpos) % len(mh)
		mh[i] = "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", mh[i])+1)%16]
		if Verify(secret, string(mh)) {
			t.Fatalf("Verify accepted %q against a hash with digit %d changed", secret, i)
		}
		if Verify(secret, strings.ToUpper(h)) && h != strings.ToUpper(h) {
			t.Fatalf("Verify accepted an upper-case spelling of the hash")
		}
	})
}

// TestParseRefusesOtherSpellingsOfAnID checks that an id written another
// way than Format writes it is malformed: "drv_07_s" must not
// authenticate as token 7.
func TestParseRefusesOtherSpellingsOfAnID(t *testing.T) {
	t.Parallel()
	for _, idText := range []string{"07", "+7", "0007", "7 ", " 7", "٧"} {
		tok := "drv_" + idText + "_secret"
		if id, _, err := Parse(tok); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = id %d, %v; want ErrMalformed", tok, id, err)
		}
	}
	if id, secret, err := Parse("drv_" + strconv.Itoa(7) + "_secret"); err != nil || id != 7 || secret != "secret" {
		t.Errorf("Parse of the canonical token = %d, %q, %v", id, secret, err)
	}
}
