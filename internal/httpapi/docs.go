package httpapi

import (
	_ "embed"
	"net/http"
)

// docsPage renders /openapi.json in the browser with no outside assets:
// every script and style is in this file, embedded in the binary.
//
//go:embed docs.html
var docsPage []byte

func serveDocs(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Write(docsPage) //nolint:errcheck // the client went away
}
