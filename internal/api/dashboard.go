package api

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/dashboard"
)

// serveDashboard serves the operators' page. It loads its script, style
// sheet and icon from /ui/ and calls this API; the policy forbids anything
// else, so the page works on a network with no way out.
func (a *API) serveDashboard(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", dashboard.ContentSecurityPolicy)
	setAssetHeaders(h)
	_, _ = w.Write(dashboard.Page)
	return nil
}

// serveAsset serves a file of the page; any other name is an unknown route.
func (a *API) serveAsset(w http.ResponseWriter, r *http.Request) error {
	name := chi.URLParam(r, "asset")
	content, contentType, ok := dashboard.Asset(name)
	if !ok {
		return invalid(errRouteNotFound, "no route %s %s", r.Method, r.URL.Path)
	}
	h := w.Header()
	h.Set("Content-Type", contentType)
	setAssetHeaders(h)
	_, _ = w.Write(content)
	return nil
}

func setAssetHeaders(h http.Header) {
	// Revalidated on every load: a new binary brings new files under the
	// same names.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
