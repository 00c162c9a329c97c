package httpapi_test

import (
	"testing"

	"github.com/danielgtaylor/huma/v2"
)

// TestEveryOperationDocuments401And403 checks that the document lists the
// answers the Authenticator can give in front of any route once tokens
// exist, which FuzzBearer found missing on most operations.
func TestEveryOperationDocuments401And403(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for path, item := range b.api.OpenAPI().Paths {
		for _, op := range []*huma.Operation{item.Get, item.Post, item.Put, item.Patch, item.Delete} {
			if op == nil {
				continue
			}
			for _, status := range []string{"401", "403"} {
				r := op.Responses[status]
				if r == nil || r.Content["application/problem+json"] == nil {
					t.Errorf("%s %s (%s) does not document %s as a problem", path, op.Method, op.OperationID, status)
				}
			}
		}
	}
}
