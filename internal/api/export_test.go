package api

import (
	"slices"

	"github.com/go-chi/chi/v5"
)

// Routes exposes the router to the tests, which walk it.
func (a *API) Routes() chi.Routes { return a.router }

// ErrorCodes lists every error code the API answers with.
func ErrorCodes() []string {
	var codes []string
	for _, row := range errorTable {
		// Several errors may share a code (with their own details).
		if !slices.Contains(codes, row.code) {
			codes = append(codes, row.code)
		}
	}
	return codes
}

// QueryParams returns what the route ("GET /keys") takes in its query:
// every parameter's name, and whether it may be repeated. ok is false for
// a route that declared nothing.
func (a *API) QueryParams(route string) (params map[string]bool, ok bool) {
	q, ok := a.queries[route]
	params = map[string]bool{}
	for _, p := range q {
		params[p.name] = p.repeatable
	}
	return params, ok
}

// ClosestParameter returns the parameter among params that an unknown name
// most likely meant, or "".
func ClosestParameter(name string, params ...string) string { return takes(params...).closest(name) }
