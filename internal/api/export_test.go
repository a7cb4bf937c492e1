package api

import "github.com/go-chi/chi/v5"

// Routes exposes the router to the tests, which walk it.
func (a *API) Routes() chi.Routes { return a.router }

// ErrorCodes lists every error code the API answers with.
func ErrorCodes() []string {
	codes := make([]string, len(errorTable))
	for i, row := range errorTable {
		codes[i] = row.code
	}
	return codes
}
