// Package dashboard holds the operators' web page: one HTML page, its
// script, style sheet and icon, embedded in the binary so that the page
// works where the server runs, with no network beyond it. The page reads
// and changes the pool only through the public JSON API; the routes that
// serve it are in internal/api's router.
package dashboard

import (
	"embed"
	"path"
)

//go:embed assets
var assets embed.FS

// Page is the dashboard's HTML page, served at /.
var Page = mustRead("index.html")

// ContentSecurityPolicy lets the page load its own script, style sheet and
// icon and talk to its own origin, and nothing else: no inline script, no
// inline style, no other host, no frames.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// contentTypes are the types of the assets the page loads.
var contentTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

// Asset returns an asset the page loads (served under /ui/) and its
// content type; ok is false for any other name, the page included.
func Asset(name string) (content []byte, contentType string, ok bool) {
	contentType, ok = contentTypes[path.Ext(name)]
	if !ok || name != path.Base(name) {
		return nil, "", false
	}
	content, err := assets.ReadFile("assets/" + name)
	if err != nil {
		return nil, "", false
	}
	return content, contentType, true
}

func mustRead(name string) []byte {
	content, err := assets.ReadFile("assets/" + name)
	if err != nil {
		panic("dashboard: " + err.Error())
	}
	return content
}
