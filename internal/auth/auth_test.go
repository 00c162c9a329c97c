package auth

import (
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	secret, hash, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if len(secret) < 40 || hash == secret || strings.Contains(hash, secret) {
		t.Fatalf("secret %q hash %q", secret, hash)
	}
	tok := Format(42, secret)
	id, got, err := Parse(tok)
	if err != nil || id != 42 || got != secret {
		t.Fatalf("Parse(%q) = %d, %q, %v", tok, id, got, err)
	}
	if !Verify(got, hash) {
		t.Fatal("Verify refused the right secret")
	}
	if Verify(got+"x", hash) || Verify("", hash) {
		t.Fatal("Verify accepted a wrong secret")
	}
	other, _, _ := New()
	if other == secret {
		t.Fatal("two tokens share a secret")
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "drv_", "drv_1", "drv_1_", "drv_x_abc", "drv_0_abc", "drv_-1_abc", "abc_1_def", "Bearer drv_1_x", "drv_1_" + strings.Repeat("a", 129)} {
		if _, _, err := Parse(tok); err == nil {
			t.Errorf("Parse(%q) accepted", tok)
		}
	}
}

func TestScopeAllows(t *testing.T) {
	t.Parallel()
	want := map[Scope][]Scope{
		ScopeAdmin:    {ScopeAdmin, ScopeProducer, ScopeWorker, ScopeRead},
		ScopeProducer: {ScopeProducer, ScopeRead},
		ScopeWorker:   {ScopeWorker, ScopeRead},
		ScopeRead:     {ScopeRead},
	}
	for _, have := range Scopes {
		for _, need := range Scopes {
			allowed := false
			for _, w := range want[have] {
				allowed = allowed || w == need
			}
			if have.Allows(need) != allowed {
				t.Errorf("%s.Allows(%s) = %v, want %v", have, need, have.Allows(need), allowed)
			}
		}
	}
	for _, s := range Scopes {
		if got, err := ParseScope(string(s)); err != nil || got != s {
			t.Errorf("ParseScope(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseScope("root"); err == nil {
		t.Error("ParseScope accepted root")
	}
}
