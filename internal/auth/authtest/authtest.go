// Package authtest checks a face's endpoints against every kind of
// caller: the scope matrix of who may call what. Only tests import it.
//
// A face's test lists its endpoints (REST enumerates them from its
// served OpenAPI document, so that a new route cannot escape the check;
// gRPC lists its methods from the contract's descriptors and GraphQL its
// root fields from the executable schema) with a way to call
// each one, and a table of the scope each endpoint needs. Check calls
// every endpoint with every credential and compares what the face
// answered with what the table says: no valid token is refused as
// unauthenticated, a token whose scope does not allow the call is
// forbidden, and every other call reaches the handler.
package authtest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/store"
)

// Credential is a kind of caller.
type Credential string

// The callers without a valid token. The callers with one are named
// after their scope: Credential(auth.ScopeAdmin) and so on.
const (
	NoToken     Credential = "no token"
	Malformed   Credential = "malformed token"
	WrongSecret Credential = "wrong secret"
	UnknownID   Credential = "unknown token id"
	Revoked     Credential = "revoked token"
)

// Invalid lists the credentials that carry no valid token.
var Invalid = []Credential{NoToken, Malformed, WrongSecret, UnknownID, Revoked}

// Credentials maps every kind of caller to the bearer token it sends (""
// for NoToken).
type Credentials map[Credential]string

// Secrets returns every token secret that the credentials hold, to look
// for where no secret may appear (logs, stored rows).
func (c Credentials) Secrets() []string {
	var out []string
	for _, tok := range c {
		if _, secret, err := auth.Parse(tok); err == nil {
			out = append(out, secret)
		}
	}
	return out
}

// NewCredentials creates in st one token per scope and a revoked admin
// token, and returns them with the credentials that need no record: no
// token, a malformed one, the admin token's id with a wrong secret, and
// an id that names no token.
func NewCredentials(t testing.TB, st store.Store) Credentials {
	t.Helper()
	ctx := t.Context()
	c := Credentials{NoToken: "", Malformed: "drv_not-a-token"}
	create := func(scope auth.Scope, name string) (int64, string) {
		secret, hash, err := auth.New()
		if err != nil {
			t.Fatal(err)
		}
		rec, err := st.CreateToken(ctx, store.CreateTokenParams{Now: time.Now(), Name: name, Scope: string(scope), Hash: hash})
		if err != nil {
			t.Fatalf("create a %s token: %v", scope, err)
		}
		return rec.ID, secret
	}
	for _, sc := range auth.Scopes {
		id, secret := create(sc, "authtest-"+string(sc))
		c[Credential(sc)] = auth.Format(id, secret)
	}
	id, secret := create(auth.ScopeAdmin, "authtest-revoked")
	if err := st.RevokeToken(ctx, store.RevokeTokenParams{Now: time.Now(), ID: id}); err != nil {
		t.Fatalf("revoke a token: %v", err)
	}
	c[Revoked] = auth.Format(id, secret)
	adminID, _, err := auth.Parse(c[Credential(auth.ScopeAdmin)])
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := auth.New()
	if err != nil {
		t.Fatal(err)
	}
	c[WrongSecret] = auth.Format(adminID, other)
	c[UnknownID] = auth.Format(id+1_000_000, secret)
	return c
}

// Outcome is how a face answered a call, as far as the token check goes.
type Outcome string

// The outcomes.
const (
	// Unauthenticated: HTTP 401, gRPC UNAUTHENTICATED, GraphQL
	// extensions.code "unauthorized".
	Unauthenticated Outcome = "unauthenticated"
	// Forbidden: HTTP 403, gRPC PERMISSION_DENIED, GraphQL
	// extensions.code "forbidden".
	Forbidden Outcome = "forbidden"
	// Allowed: any other answer; the call reached the handler.
	Allowed Outcome = "allowed"
)

// Public is the needed scope of an endpoint that every caller may call,
// with or without a token.
const Public auth.Scope = ""

// Want is the outcome the caller cred must get from an endpoint that
// needs the scope need.
func Want(cred Credential, need auth.Scope) Outcome {
	switch {
	case need == Public:
		return Allowed
	case slices.Contains(Invalid, cred):
		return Unauthenticated
	case auth.Scope(cred).Allows(need):
		return Allowed
	default:
		return Forbidden
	}
}

// Endpoint is one operation of a face.
type Endpoint struct {
	// Name is the operation in the table of needed scopes, such as
	// "POST /v1/jobs/{id}/complete", "drover.v1.WorkerService/Complete" or
	// "Mutation.completeJob".
	Name string
	// Call makes the call, with bearer as the token when it is not empty,
	// and returns the outcome and the answer in a few words for a
	// failure message. An error means the call could not be made.
	Call func(ctx context.Context, bearer string) (Outcome, string, error)
}

// Check calls every endpoint with every credential and fails t where the
// outcome is not the one that need (endpoint name → needed scope) says.
// It fails, before any call, when an endpoint is missing from need or
// need names an endpoint that the face does not have, so that the table
// and the face cannot drift apart. It returns how many calls it checked.
func Check(t *testing.T, endpoints []Endpoint, need map[string]auth.Scope, creds Credentials) int {
	t.Helper()
	for _, c := range append(slices.Clone(Invalid), Credential(auth.ScopeAdmin), Credential(auth.ScopeProducer), Credential(auth.ScopeWorker), Credential(auth.ScopeRead)) {
		if _, ok := creds[c]; !ok {
			t.Errorf("no %s credential: use NewCredentials", c)
		}
	}
	seen := map[string]bool{}
	for _, e := range endpoints {
		if seen[e.Name] {
			t.Errorf("endpoint %s is listed twice", e.Name)
		}
		seen[e.Name] = true
		if _, ok := need[e.Name]; !ok {
			t.Errorf("endpoint %s is not in the table of needed scopes: add it", e.Name)
		}
	}
	for name := range need {
		if !seen[name] {
			t.Errorf("the table of needed scopes names %s, which the face does not have", name)
		}
	}
	if t.Failed() {
		return 0
	}
	callers := slices.Sorted(func(yield func(Credential) bool) {
		for c := range creds {
			if !yield(c) {
				return
			}
		}
	})
	checked := 0
	for _, e := range endpoints {
		for _, cred := range callers {
			got, answer, err := e.Call(t.Context(), creds[cred])
			if err != nil {
				t.Errorf("%s as %s: %v", e.Name, cred, err)
				continue
			}
			checked++
			if want := Want(cred, need[e.Name]); got != want {
				t.Errorf("%s as %s: %s (%s), want %s", e.Name, cred, got, answer, want)
			}
		}
	}
	return checked
}
