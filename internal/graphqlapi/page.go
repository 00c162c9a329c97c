package graphqlapi

import (
	"embed"
	"io/fs"
	"net/http"
)

// pageAssets is where the query page's assets are served.
const pageAssets = Path + "/ui/"

// pageFiles are the query page and its assets: hand-written, embedded in
// the binary, with no reference to another site (no CDN).
//
//go:embed page
var pageFiles embed.FS

// pageCSP keeps the page to its own origin: scripts, styles and requests.
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func pageHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
}

// servePage answers the query page.
func servePage(w http.ResponseWriter, r *http.Request) {
	b, err := pageFiles.ReadFile("page/index.html")
	if err != nil {
		http.Error(w, "the page is missing from the binary", http.StatusInternalServerError)
		return
	}
	pageHeaders(w)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	if r.Method != http.MethodHead {
		w.Write(b) //nolint:errcheck // the client went away
	}
}

// assetHandler serves the page's assets (not the page itself, which is
// served at Path).
func assetHandler() http.Handler {
	sub, err := fs.Sub(pageFiles, "page")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || r.URL.Path == "index.html" || r.URL.Path[len(r.URL.Path)-1] == '/' {
			http.NotFound(w, r)
			return
		}
		pageHeaders(w)
		// Small, and they change with the binary: no stale copy after an
		// upgrade.
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// PageAssets lists the files of the query page that are served under
// Path+"/ui/", for tests.
func PageAssets() []string {
	entries, err := pageFiles.ReadDir("page")
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.Name() != "index.html" {
			out = append(out, pageAssets+e.Name())
		}
	}
	return out
}
