package authtest_test

import (
	"errors"
	"testing"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/auth/authtest"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store/sqlitestore"
)

func TestWant(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cred authtest.Credential
		need auth.Scope
		want authtest.Outcome
	}{
		{authtest.NoToken, authtest.Public, authtest.Allowed},
		{authtest.Revoked, authtest.Public, authtest.Allowed},
		{authtest.NoToken, auth.ScopeRead, authtest.Unauthenticated},
		{authtest.Malformed, auth.ScopeRead, authtest.Unauthenticated},
		{authtest.WrongSecret, auth.ScopeRead, authtest.Unauthenticated},
		{authtest.UnknownID, auth.ScopeRead, authtest.Unauthenticated},
		{authtest.Revoked, auth.ScopeAdmin, authtest.Unauthenticated},
		{authtest.Credential(auth.ScopeAdmin), auth.ScopeWorker, authtest.Allowed},
		{authtest.Credential(auth.ScopeRead), auth.ScopeRead, authtest.Allowed},
		{authtest.Credential(auth.ScopeRead), auth.ScopeProducer, authtest.Forbidden},
		{authtest.Credential(auth.ScopeProducer), auth.ScopeWorker, authtest.Forbidden},
		{authtest.Credential(auth.ScopeWorker), auth.ScopeAdmin, authtest.Forbidden},
		{authtest.Credential(auth.ScopeWorker), auth.ScopeRead, authtest.Allowed},
	}
	for _, c := range cases {
		if got := authtest.Want(c.cred, c.need); got != c.want {
			t.Errorf("Want(%s, %q) = %s, want %s", c.cred, c.need, got, c.want)
		}
	}
}

// TestNewCredentials checks that each credential is what its name says,
// against a real store.
func TestNewCredentials(t *testing.T) {
	t.Parallel()
	st, err := sqlitestore.Open(t.TempDir(), sqlitestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	creds := authtest.NewCredentials(t, st)
	ctx := t.Context()
	lookup := func(c authtest.Credential) (ok bool, scope string, revoked bool) {
		id, secret, err := auth.Parse(creds[c])
		if err != nil {
			return false, "", false
		}
		rec, err := st.GetToken(ctx, id)
		if errors.Is(err, job.ErrNotFound) {
			return false, "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		return auth.Verify(secret, rec.Hash), rec.Scope, rec.RevokedAt != nil
	}
	for _, sc := range auth.Scopes {
		if ok, scope, revoked := lookup(authtest.Credential(sc)); !ok || scope != string(sc) || revoked {
			t.Errorf("the %s credential: valid %v, scope %q, revoked %v", sc, ok, scope, revoked)
		}
	}
	if ok, _, revoked := lookup(authtest.Revoked); !ok || !revoked {
		t.Errorf("the revoked credential: valid secret %v, revoked %v", ok, revoked)
	}
	for _, c := range []authtest.Credential{authtest.NoToken, authtest.Malformed, authtest.WrongSecret, authtest.UnknownID} {
		if ok, _, _ := lookup(c); ok {
			t.Errorf("the %s credential matches a stored token", c)
		}
	}
	if creds[authtest.NoToken] != "" {
		t.Errorf("the no-token credential is %q", creds[authtest.NoToken])
	}
	if _, _, err := auth.Parse(creds[authtest.Malformed]); err == nil {
		t.Errorf("the malformed credential %q parses", creds[authtest.Malformed])
	}
	if n := len(creds.Secrets()); n != 7 {
		t.Errorf("Secrets returned %d secrets, want 7 (4 scopes, revoked, wrong, unknown)", n)
	}
}
