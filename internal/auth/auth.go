// Package auth holds Drover's bearer tokens and scopes: how a token is
// made (printed once, only its hash stored), parsed and checked in constant
// time, and which scope each API call needs.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Scope is what a token may do.
type Scope string

// The scopes. Admin may do everything; the others only what they say.
const (
	// ScopeAdmin: every call, including operator actions and tokens.
	ScopeAdmin Scope = "admin"
	// ScopeProducer: enqueue jobs and read jobs.
	ScopeProducer Scope = "producer"
	// ScopeWorker: lease, heartbeat and settle jobs, and read them.
	ScopeWorker Scope = "worker"
	// ScopeRead: read jobs and queues.
	ScopeRead Scope = "read"
)

// Scopes lists every scope.
var Scopes = []Scope{ScopeAdmin, ScopeProducer, ScopeWorker, ScopeRead}

// ParseScope checks a scope name.
func ParseScope(s string) (Scope, error) {
	for _, sc := range Scopes {
		if string(sc) == s {
			return sc, nil
		}
	}
	return "", fmt.Errorf("unknown scope %q: want admin, producer, worker or read", s)
}

// Allows reports whether a token with scope s may make a call that needs
// need.
func (s Scope) Allows(need Scope) bool {
	switch {
	case s == ScopeAdmin:
		return true
	case need == ScopeRead:
		return true // every scope may read
	default:
		return s == need
	}
}

// Token is a stored token: never the secret, only its hash.
type Token struct {
	ID        int64
	Name      string
	Scope     Scope
	Hash      string
	CreatedAt time.Time
	RevokedAt *time.Time
}

const prefix = "drv_"

// New makes the secret part of a token and its hash. The full token, as
// printed to the user, is Format(id, secret) once the store has given the
// token its id.
func New() (secret, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	return secret, Hash(secret), nil
}

// Format joins a token's id and secret into the string users send as
// "Authorization: Bearer ...".
func Format(id int64, secret string) string {
	return prefix + strconv.FormatInt(id, 10) + "_" + secret
}

// ErrMalformed is returned by Parse for a string that is not a token.
var ErrMalformed = errors.New("malformed token")

// Parse splits a bearer token into its id and secret. It accepts only the
// exact text that Format writes: an id spelled another way ("+7", "07")
// is malformed, so that no two strings name the same token.
func Parse(tok string) (id int64, secret string, err error) {
	rest, ok := strings.CutPrefix(tok, prefix)
	if !ok {
		return 0, "", ErrMalformed
	}
	idText, secret, ok := strings.Cut(rest, "_")
	if !ok || secret == "" || len(secret) > 128 {
		return 0, "", ErrMalformed
	}
	id, err = strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != idText {
		return 0, "", ErrMalformed
	}
	return id, secret, nil
}

// Hash is the stored form of a secret: its SHA-256, in hex. The secrets
// are 256 random bits, so a fast hash is enough: there is nothing to
// guess.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Verify reports, in time that does not depend on where they differ,
// whether secret matches the stored hash.
func Verify(secret, hash string) bool {
	return subtle.ConstantTimeCompare([]byte(Hash(secret)), []byte(hash)) == 1
}
