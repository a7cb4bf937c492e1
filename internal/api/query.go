package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/tokenorchestrator/tokenorchestrator/internal/spelling"
)

// The query parameters of every route, checked in one place before its
// handler runs: a parameter the route does not take, misspelt or meant for
// another route, would otherwise be ignored, and the request served as if
// it had not been sent (a claim from the default pool for ?pol=, a release
// without the cooldown for ?coldown=).

// queryParam is a query parameter that a route takes.
type queryParam struct {
	name string
	// repeatable parameters may be given any number of times; the others
	// at most once.
	repeatable bool
}

// query is every query parameter that a route takes, in the order its
// documentation lists them.
type query []queryParam

// takes declares parameters given at most once; takes() a route that takes
// none.
func takes(names ...string) query {
	q := make(query, len(names))
	for i, name := range names {
		q[i] = queryParam{name: name}
	}
	return q
}

// andRepeatable adds parameters that may be given more than once.
func (q query) andRepeatable(names ...string) query {
	q = slices.Clone(q)
	for _, name := range names {
		q = append(q, queryParam{name: name, repeatable: true})
	}
	return q
}

// route registers the handler of method and pattern behind a check of its
// query: every route is registered this way, declaring what it takes.
func (a *API) route(r chi.Router, method, pattern string, q query, h http.Handler) {
	a.queries[method+" "+pattern] = q
	r.With(a.checkQuery(method+" "+pattern, q)).Method(method, pattern, h)
}

// checkQuery answers 400 for a request whose query the route does not take.
func (a *API) checkQuery(route string, q query) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := q.check(route, r.URL.RawQuery); err != nil {
				writeError(w, r, a.logger, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// check refuses a query that cannot be read (a pair that is not
// name=value, or a bad %-escape), names a parameter that the route does not
// take (unknown_parameter, suggesting the route's closest one), or gives a
// single-valued parameter more than once.
func (q query) check(route, rawQuery string) error {
	if rawQuery == "" {
		return nil
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return invalid(errInvalidParameter, "the query cannot be read: %v", err)
	}
	var unknown []string
	for name := range values {
		if !slices.ContainsFunc(q, func(p queryParam) bool { return p.name == name }) {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return invalid(errUnknownParameter, "%s; %s", q.describeUnknown(unknown), q.describe(route))
	}
	for _, p := range q {
		if n := len(values[p.name]); n > 1 && !p.repeatable {
			return invalid(errInvalidParameter, "%s is given %d times; give it once", p.name, n)
		}
	}
	return nil
}

// describeUnknown names the unknown parameters, each with the route's
// parameter it may have meant.
func (q query) describeUnknown(unknown []string) string {
	parts := make([]string, len(unknown))
	for i, name := range unknown {
		parts[i] = fmt.Sprintf("%q", name)
		if meant := q.closest(name); meant != "" {
			parts[i] += fmt.Sprintf(" (did you mean %q?)", meant)
		}
	}
	if len(parts) == 1 {
		return "unknown parameter " + parts[0]
	}
	return "unknown parameters " + strings.Join(parts, ", ")
}

// describe says what the route takes.
func (q query) describe(route string) string {
	if len(q) == 0 {
		return route + " takes no query parameters"
	}
	names := make([]string, len(q))
	for i, p := range q {
		names[i] = p.name
		if p.repeatable {
			names[i] += " (repeatable)"
		}
	}
	return route + " takes " + strings.Join(names, ", ")
}

// closest returns the route's parameter that the unknown name most likely
// meant, or "" when none is close: the same name in other letter case, one
// that starts the other (labels for label, waitMs for wait), or one within
// an edit or two (a letter missing, added, changed, or two swapped; two
// such edits for names of five letters or more).
func (q query) closest(name string) string {
	name = strings.ToLower(name)
	best, bestDistance := "", 3
	for _, p := range q {
		candidate := strings.ToLower(p.name)
		d := spelling.Distance(name, candidate)
		shorter := min(len(name), len(candidate))
		if shorter >= 4 && (strings.HasPrefix(name, candidate) || strings.HasPrefix(candidate, name)) {
			d = min(d, 1)
		}
		limit := 1
		if len(candidate) >= 5 {
			limit = 2
		}
		if d <= limit && d < bestDistance {
			best, bestDistance = p.name, d
		}
	}
	return best
}
