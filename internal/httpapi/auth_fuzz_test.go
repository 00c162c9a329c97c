package httpapi_test

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/httpapi"
	"github.com/droverhq/drover/internal/store"
)

// FuzzBearer sends arbitrary Authorization headers, and valid tokens with
// one byte changed, through the real Authenticator over a store that
// holds an admin token, a read token and a revoked admin token. A request
// passes exactly when the header is "Bearer " and a live token (give or
// take surrounding white space); anything else, a one-byte change of a
// live token included, is 401 with WWW-Authenticate and one same message,
// whether the token is unknown, revoked or wrong.
func FuzzBearer(f *testing.F) {
	var live, revoked []string
	api := newFuzzAPI(f, func(st store.Store, mux http.Handler) http.Handler {
		for _, sc := range []string{"admin", "read", "admin"} {
			secret, hash, err := auth.New()
			if err != nil {
				f.Fatal(err)
			}
			rec, err := st.CreateToken(f.Context(), store.CreateTokenParams{Now: time.Now(), Name: sc, Scope: sc, Hash: hash})
			if err != nil {
				f.Fatal(err)
			}
			live = append(live, auth.Format(rec.ID, secret))
		}
		if err := st.RevokeToken(f.Context(), store.RevokeTokenParams{Now: time.Now(), ID: 3}); err != nil {
			f.Fatal(err)
		}
		live, revoked = live[:2], live[2:]
		return httpapi.NewAuthenticator(st).Wrap(mux)
	})
	f.Add("Bearer "+live[0], uint8(0), uint16(0), byte('x'))
	f.Add("Bearer  "+live[1]+" ", uint8(1), uint16(4), byte('0'))
	f.Add("Bearer "+revoked[0], uint8(0), uint16(6), byte('_'))
	f.Add("bearer "+live[0], uint8(1), uint16(50), byte(0))
	f.Add("Bearer drv_01_"+strings.SplitN(live[0], "_", 3)[2], uint8(0), uint16(5), byte('1'))
	f.Add("Bearer drv_+1_x", uint8(0), uint16(100), byte(' '))
	f.Add("Basic dXNlcjpwYXNz", uint8(1), uint16(3), byte('_'))
	f.Add("Bearer drv_1_"+strings.Repeat("a", 200), uint8(0), uint16(0), byte('d'))
	f.Fuzz(func(t *testing.T, header string, which uint8, pos uint16, b byte) {
		var unauthorized []string
		try := func(h string) bool {
			r := api.do(t, http.MethodGet, "/v1/queues", http.Header{"Authorization": {h}}, nil)
			api.check(t, r)
			switch r.status {
			case http.StatusOK:
				return true
			case http.StatusUnauthorized:
				if r.header.Get("WWW-Authenticate") == "" {
					t.Fatalf("401 without WWW-Authenticate for %q", h)
				}
				var p httpapi.Problem
				if err := strictDecode(r.body, &p); err != nil {
					t.Fatal(err)
				}
				unauthorized = append(unauthorized, p.Detail)
				return false
			}
			t.Fatalf("Authorization %q answered %s", h, r)
			return false
		}

		rest, isBearer := strings.CutPrefix(header, "Bearer ")
		want := isBearer && slices.Contains(live, strings.TrimSpace(rest))
		if got := try(header); got != want {
			t.Fatalf("Authorization %q: passed = %v, want %v", header, got, want)
		}

		tok := live[int(which)%len(live)]
		mut := []byte(tok)
		mut[int(pos)%len(mut)] = b
		if string(mut) != tok && try("Bearer "+string(mut)) {
			t.Fatalf("token %q with one byte changed (%q) passed", tok, mut)
		}
		// The same refusal for every well-formed token that fails.
		if len(unauthorized) == 2 && unauthorized[0] != unauthorized[1] && isBearer {
			if _, _, err1 := auth.Parse(strings.TrimSpace(rest)); err1 == nil {
				if _, _, err2 := auth.Parse(string(mut)); err2 == nil {
					t.Fatalf("two refusals of well-formed tokens differ: %q and %q", unauthorized[0], unauthorized[1])
				}
			}
		}
	})
}
