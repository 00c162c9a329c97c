package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/droverhq/drover/internal/auth"
	"github.com/droverhq/drover/internal/job"
	"github.com/droverhq/drover/internal/store"
)

// Token is an API token on the wire: never its secret, except once, in
// the reply that creates it.
type Token struct {
	ID        int64      `json:"id"`
	Name      string     `json:"name,omitempty"`
	Scope     string     `json:"scope" enum:"admin,producer,worker,read"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// Token is the bearer token itself, present only in the create reply.
	Token string `json:"token,omitempty" doc:"The bearer token, shown only in the reply that creates it: store it now."`
}

func toToken(t store.TokenRecord) Token {
	return Token{ID: t.ID, Name: t.Name, Scope: t.Scope, CreatedAt: t.CreatedAt, RevokedAt: t.RevokedAt}
}

type createTokenInput struct {
	Body struct {
		Scope string `json:"scope" enum:"admin,producer,worker,read"`
		Name  string `json:"name,omitempty" maxLength:"128"`
	}
}

type tokenOutput struct {
	Status int
	Body   Token
}

type tokensOutput struct {
	Body struct {
		Tokens []Token `json:"tokens"`
	}
}

type tokenIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// registerTokens adds the token routes. They need the admin scope (see
// NeededScope), so they only work once tokens are in use: the first admin
// token is made with `drover token create` on a stopped server.
func (a *API) registerTokens(st store.Store) {
	tags := []string{"Tokens"}
	huma.Register(a.api, huma.Operation{
		OperationID: "createToken", Method: http.MethodPost, Path: "/v1/tokens", Tags: tags,
		Summary:       "Create an API token (admin)",
		Description:   "The reply holds the token itself, the only time it is ever shown; only its hash is stored.",
		DefaultStatus: http.StatusCreated, Errors: []int{400, 401, 403, 413, 415, 422},
	}, func(ctx context.Context, in *createTokenInput) (*tokenOutput, error) {
		scope, err := auth.ParseScope(in.Body.Scope)
		if err != nil {
			return nil, a.fail(ctx, "createToken", &job.ValidationError{Field: "scope", Message: err.Error()})
		}
		secret, hash, err := auth.New()
		if err != nil {
			return nil, a.fail(ctx, "createToken", err)
		}
		rec, err := st.CreateToken(ctx, store.CreateTokenParams{Now: a.eng.Now(), Name: in.Body.Name, Scope: string(scope), Hash: hash})
		if err != nil {
			return nil, a.fail(ctx, "createToken", err)
		}
		out := &tokenOutput{Status: http.StatusCreated, Body: toToken(*rec)}
		out.Body.Token = auth.Format(rec.ID, secret)
		return out, nil
	})
	huma.Register(a.api, huma.Operation{
		OperationID: "listTokens", Method: http.MethodGet, Path: "/v1/tokens", Tags: tags,
		Summary: "List API tokens, without their secrets (admin)", Errors: []int{401, 403},
	}, func(ctx context.Context, _ *struct{}) (*tokensOutput, error) {
		ts, err := st.ListTokens(ctx)
		if err != nil {
			return nil, a.fail(ctx, "listTokens", err)
		}
		out := &tokensOutput{}
		out.Body.Tokens = make([]Token, len(ts))
		for i, t := range ts {
			out.Body.Tokens[i] = toToken(t)
		}
		return out, nil
	})
	huma.Register(a.api, huma.Operation{
		OperationID: "revokeToken", Method: http.MethodDelete, Path: "/v1/tokens/{id}", Tags: tags,
		Summary:       "Revoke an API token (admin); it stops working within 5 seconds",
		DefaultStatus: http.StatusNoContent, Errors: []int{401, 403, 404},
	}, func(ctx context.Context, in *tokenIDInput) (*emptyOutput, error) {
		if err := st.RevokeToken(ctx, store.RevokeTokenParams{Now: a.eng.Now(), ID: in.ID}); err != nil {
			return nil, a.fail(ctx, "revokeToken", fmt.Errorf("%w", err))
		}
		return &emptyOutput{}, nil
	})
}
