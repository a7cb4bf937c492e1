package api

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
)

// recoverer turns a panic into a logged 500 with a JSON body.
func (a *API) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if rec := recover(); rec != nil {
				if rec == http.ErrAbortHandler { //nolint:errorlint // recover returns the panic value as is, and net/http matches ErrAbortHandler by == too
					panic(rec)
				}
				a.logger.ErrorContext(r.Context(), "panic", "panic", rec, "stack", string(debug.Stack()),
					"request_id", middleware.GetReqID(r.Context()))
				writeError(w, r, a.logger, fmt.Errorf("%w: panic: %v", errInternal, rec))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// observe logs every request at debug level (errors above it) and records
// it in the metrics under its route pattern, so that key ids do not become
// label values. It runs before any token is checked, so whatever a client
// sends must map to a fixed set of labels: a pattern that is not one of the
// router's, which the router never gives but nothing else would stop, is
// counted as "unmatched", and the metrics map unknown methods to "other".
func (a *API) observe(m *metrics.Metrics) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			elapsed := time.Since(start)
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			route := chi.RouteContext(r.Context()).RoutePattern()
			if !a.routes[route] {
				route = "unmatched"
			}
			if m != nil {
				m.ObserveRequest(route, r.Method, status, elapsed)
			}
			// The span began before the route was known: name it after the
			// route, never the path, whose key ids would make every span
			// name different.
			if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
				span.SetName(methodLabel(r.Method) + " " + route)
				span.SetAttributes(semconv.HTTPRoute(route))
			}
			level := slog.LevelDebug
			if status >= 500 {
				level = slog.LevelWarn
			}
			// Checked first: at the default level the access log is off, and
			// building its arguments on every request would be wasted.
			if a.logger.Enabled(r.Context(), level) {
				a.logger.Log(r.Context(), level, "request", "method", r.Method, "route", route, "path", r.URL.Path,
					"status", status, "duration_ms", float64(elapsed.Microseconds())/1000,
					"request_id", middleware.GetReqID(r.Context()))
			}
		})
	}
}

// limitBody caps request bodies; a longer one reads as an error that the
// handlers report as 413. A POST /keys may list keys with their secrets,
// and is read up to importMax; its handler holds any other body to max.
func limitBody(max, importMax int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			limit := max
			if r.Method == http.MethodPost && r.URL.Path == "/keys" {
				limit = importMax
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
			next.ServeHTTP(w, r)
		})
	}
}

// exposedHeaders are the response headers a browser script may read.
var exposedHeaders = strings.Join([]string{
	"Location", "ETag", "Retry-After", "X-Request-Id", "WWW-Authenticate",
	"X-Pool", "X-Pool-Keys", "X-Pool-Free", "X-Pool-Blocked", "X-Pool-Available",
	"X-Key-Id", "X-Key-Pool", "X-Key-Status", "X-Key-Created-At", "X-Key-Blocked-At",
	"X-Key-Expires-At", "X-Key-Lease-Expires-At", "X-Key-Last-Keep-Alive-At", "X-Key-Times-Assigned", "X-Key-Seats", "X-Key-Seats-Held",
	"Idempotent-Replayed",
}, ", ")

// cors lets browser pages from the allowed origins call the API. A
// preflight from an allowed origin is answered here; one from any other
// origin is refused with 403.
func cors(origins []string, logger *slog.Logger) func(http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	allowed := func(origin string) bool { return anyOrigin || slices.Contains(origins, origin) }
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("Origin")
			if origin == "" {
				next.ServeHTTP(w, r)
				return
			}
			h := w.Header()
			h.Add("Vary", "Origin")
			preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
			if !allowed(origin) {
				if preflight {
					writeError(w, r, logger, invalid(errOriginNotAllowed, "origin %q may not call this API", origin))
					return
				}
				// Served without CORS headers: the browser keeps the answer
				// from the page.
				next.ServeHTTP(w, r)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			if !preflight {
				h.Set("Access-Control-Expose-Headers", exposedHeaders)
				next.ServeHTTP(w, r)
				return
			}
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", strings.Join(allMethods, ", "))
			h.Set("Access-Control-Allow-Headers", "Content-Type, If-Match, Authorization, Idempotency-Key")
			h.Set("Access-Control-Max-Age", "600")
			writeJSON(w, http.StatusOK, map[string]string{"status": "preflight ok"})
		})
	}
}

// methodLabel is the method as a span name shows it: one of HTTP's, or
// "HTTP" for any other, which a client may make up.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return method
	default:
		return "HTTP"
	}
}
