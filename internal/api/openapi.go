package api

import (
	_ "embed"
	"fmt"
	"net/http"
	"sync"

	"github.com/tokenorchestrator/tokenorchestrator/internal/api/reference"
)

// OpenAPIDocument is the contract of the HTTP API: every route, parameter,
// body, header and error. A test holds the router and the handlers to it.
//
//go:embed openapi.yaml
var OpenAPIDocument []byte

func (a *API) serveOpenAPI(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Cache-Control", "no-cache")
	_, _ = w.Write(OpenAPIDocument)
	return nil
}

func (a *API) serveReference(w http.ResponseWriter, r *http.Request) error {
	page, err := referencePage()
	if err != nil {
		return fmt.Errorf("%w: API reference: %w", errInternal, err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	// The page is self-contained: it may load nothing, run nothing.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	_, _ = w.Write(page)
	return nil
}

// referencePage renders the API reference once per process.
var referencePage = sync.OnceValues(func() ([]byte, error) { return reference.Render(OpenAPIDocument) })
