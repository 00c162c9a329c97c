package auth_test

import (
	"crypto/sha256"
	"encoding/hex"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/droverhq/drover/internal/auth"
)

// TestHashIsTheSHA256OfTheSecret pins the stored form: the hex SHA-256 of
// the secret, which never contains the secret.
func TestHashIsTheSHA256OfTheSecret(t *testing.T) {
	t.Parallel()
	for range 20 {
		secret, hash, err := auth.New()
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(secret))
		if hash != hex.EncodeToString(sum[:]) || auth.Hash(secret) != hash {
			t.Fatalf("hash of %q = %q, want its hex SHA-256", secret, hash)
		}
		if len(hash) != 64 || strings.Contains(hash, secret) {
			t.Fatalf("hash %q: want 64 hex digits without the secret", hash)
		}
	}
}

// TestVerifyRefusesEveryOtherHash changes the stored hash at every
// position, and its length and case: only the exact hash verifies.
func TestVerifyRefusesEveryOtherHash(t *testing.T) {
	t.Parallel()
	secret, hash, err := auth.New()
	if err != nil {
		t.Fatal(err)
	}
	if !auth.Verify(secret, hash) {
		t.Fatal("Verify refused the right hash")
	}
	for i := range hash {
		b := []byte(hash)
		b[i] = "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", b[i])+1)%16]
		if auth.Verify(secret, string(b)) {
			t.Fatalf("Verify accepted the hash changed at %d", i)
		}
	}
	for _, other := range []string{"", hash[:63], hash + "0", strings.ToUpper(hash), secret} {
		if auth.Verify(secret, other) {
			t.Fatalf("Verify accepted %q", other)
		}
	}
}

// TestSecretsAreComparedInConstantTime reads the code that handles API
// tokens: Verify must compare with crypto/subtle, and no other code there
// may compare a secret or a hash with == or != (a comparison that stops
// at the first differing byte tells an attacker how much was right). A
// timing measurement would be flaky on a shared machine; the code is what
// can be checked exactly.
func TestSecretsAreComparedInConstantTime(t *testing.T) {
	t.Parallel()
	root := filepath.Join("..", "..")
	files := []string{
		"internal/auth/auth.go",
		"internal/httpapi/auth.go",
		"internal/httpapi/tokens.go",
		"internal/store/sqlitestore/tokens.go",
		"internal/store/pgstore/tokens.go",
		"cmd/drover/token.go",
	}
	fset := token.NewFileSet()
	verifyUsesSubtle := false
	for _, name := range files {
		src, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatalf("%s: %v (the list of files that handle tokens is out of date)", name, err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.FuncDecl:
				if name == "internal/auth/auth.go" && n.Name.Name == "Verify" {
					verifyUsesSubtle = calls(n, "subtle", "ConstantTimeCompare")
				}
			case *ast.BinaryExpr:
				if n.Op != token.EQL && n.Op != token.NEQ {
					return true
				}
				if isEmpty(n.X) || isEmpty(n.Y) {
					return true // a test for absence, not a comparison
				}
				if isConstantTime(n.X) || isConstantTime(n.Y) {
					return true // the result of subtle.ConstantTimeCompare
				}
				for _, side := range []ast.Expr{n.X, n.Y} {
					if text := strings.ToLower(string(src[fset.Position(side.Pos()).Offset:fset.Position(side.End()).Offset])); strings.Contains(text, "secret") || strings.Contains(text, "hash") {
						t.Errorf("%s: %s compares a secret or a hash with %s; use auth.Verify", fset.Position(n.Pos()), src[fset.Position(n.Pos()).Offset:fset.Position(n.End()).Offset], n.Op)
						break
					}
				}
			}
			return true
		})
		// A store that looked tokens up by their hash would compare it
		// in the database's index, not in constant time.
		if strings.Contains(strings.ToLower(string(src)), "where hash") {
			t.Errorf("%s looks a token up by its hash; look it up by id and Verify the secret", name)
		}
	}
	if !verifyUsesSubtle {
		t.Error("auth.Verify does not compare with subtle.ConstantTimeCompare")
	}
}

// calls reports whether fn calls pkg.name.
func calls(fn *ast.FuncDecl, pkg, name string) bool {
	found := false
	ast.Inspect(fn, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok {
			if sel, ok := c.Fun.(*ast.SelectorExpr); ok {
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == pkg && sel.Sel.Name == name {
					found = true
				}
			}
		}
		return !found
	})
	return found
}

// isConstantTime reports whether e is a call of
// subtle.ConstantTimeCompare.
func isConstantTime(e ast.Expr) bool {
	c, ok := e.(*ast.CallExpr)
	if !ok {
		return false
	}
	sel, ok := c.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == "subtle" && sel.Sel.Name == "ConstantTimeCompare"
}

// isEmpty reports whether e is "" or nil.
func isEmpty(e ast.Expr) bool {
	switch e := e.(type) {
	case *ast.BasicLit:
		return e.Value == `""`
	case *ast.Ident:
		return e.Name == "nil"
	}
	return false
}
