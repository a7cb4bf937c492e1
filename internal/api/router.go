// Package api is the HTTP interface of the key pool: every route in one
// router, handlers that return errors, and one function that turns errors
// into problem details.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/claim"
	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/migrate"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
)

// Config holds what the API needs.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Metrics, when set, records every request and is served at /metrics.
	Metrics *metrics.Metrics
	// CORSOrigins may call the API from a browser; "*" allows any.
	CORSOrigins []string
	// Ready reports whether the service can serve: database reachable,
	// migrations applied, not shutting down (ErrShuttingDown).
	Ready func(context.Context) error
	// Claims serves GET /keys, the claim; needed by that route only.
	Claims *claim.Service
	// Auth sets the bearer tokens; without them the API asks for none.
	Auth Auth
	// TracerProvider, when set, traces every request: a span named after
	// its route, joined to the caller's trace when the request carries a
	// W3C traceparent header. Defaults to none: no tracing, at no cost.
	TracerProvider trace.TracerProvider
}

// API serves the HTTP interface.
type API struct {
	store  *store.Store
	claims *claim.Service
	logger *slog.Logger
	// metrics is nil when none are kept.
	metrics *metrics.Metrics
	auth    *authenticator
	router  chi.Router
	// routes holds the router's patterns: the only route labels of the
	// metrics.
	routes map[string]bool
	// queries holds what each route ("GET /keys") takes in its query.
	queries map[string]query
}

// New builds the API and its router.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &API{store: cfg.Store, claims: cfg.Claims, logger: cfg.Logger, metrics: cfg.Metrics, auth: newAuthenticator(cfg.Auth),
		queries: map[string]query{}}
	r := chi.NewRouter()
	a.router = r

	if cfg.TracerProvider != nil {
		// First, so that the span covers everything the server does; it is
		// renamed after the route once the router has found it (observe).
		r.Use(otelhttp.NewMiddleware("HTTP", otelhttp.WithTracerProvider(cfg.TracerProvider),
			otelhttp.WithPropagators(telemetry.Propagator), otelhttp.WithMeterProvider(noopmetric.NewMeterProvider())))
	}
	r.Use(middleware.RequestID)
	r.Use(a.recoverer)
	r.Use(a.observe(cfg.Metrics))
	r.Use(cors(cfg.CORSOrigins, cfg.Logger))
	r.Use(limitBody(maxBodyBytes, maxImportBodyBytes))

	r.NotFound(a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return invalid(errRouteNotFound, "no route %s %s", r.Method, r.URL.Path)
	}))
	r.MethodNotAllowed(a.methodNotAllowed)

	// Who may call what, with which query parameters: every route is
	// registered through the role it asks of the caller, and declares the
	// parameters it takes; any other is refused before its handler runs.
	// With no token configured, every role is open.
	admin := r.With(a.require(roleAdmin))
	client := r.With(a.require(roleClient))
	health := r.With(a.require(publicUnless(cfg.Auth.PublicHealth, roleClient)))
	metricsRole := r.With(a.require(publicUnless(cfg.Auth.PublicMetrics, roleAdmin)))
	public := r.With(a.require(rolePublic))
	const get, head, post, put, del = http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete

	a.route(admin, post, "/keys", takes("pool"), a.handle(a.createKeys))
	a.route(client, get, "/keys", takes("pool", "wait").andRepeatable("label"), a.handle(a.claimKey))
	// HEAD /keys is its own handler: it must never claim a key, as a HEAD
	// answered by the GET handler would.
	a.route(client, head, "/keys", takes("pool"), a.handle(a.poolAvailability))
	a.route(client, get, "/keys/{id}", takes("lease"), a.handle(a.getKey))
	a.route(client, head, "/keys/{id}", takes(), a.handle(a.headKey))
	a.route(admin, del, "/keys/{id}", takes(), a.handle(a.deleteKey))
	a.route(client, put, "/keys/{id}", takes("lease", "cooldown"), a.handle(a.releaseKey))
	a.route(client, put, "/keys/{id}/keepalive", takes("lease"), a.handle(onLease(a.store.KeepAlive)))
	a.route(client, put, "/keepalive/{id}", takes("lease"), a.handle(onLease(a.store.KeepAlive)))

	a.route(admin, get, "/stats", takes(), a.handle(a.stats))
	a.route(admin, get, "/reports", takes(), a.handle(a.listReports))
	a.route(admin, get, "/reports/leases", reportQuery("leases"), a.handle(a.report("leases")))
	a.route(admin, get, "/reports/lease-activity", reportQuery("lease-activity"), a.handle(a.report("lease-activity")))
	a.route(admin, get, "/reports/lease-durations", reportQuery("lease-durations"), a.handle(a.report("lease-durations")))
	a.route(admin, get, "/reports/key-activity", reportQuery("key-activity"), a.handle(a.report("key-activity")))
	a.route(admin, get, "/reports/utilisation", reportQuery("utilisation"), a.handle(a.report("utilisation")))
	a.route(admin, get, "/reports/key-cooldowns", reportQuery("key-cooldowns"), a.handle(a.report("key-cooldowns")))

	// The dashboard: its page and assets are public, as a browser cannot
	// send a token when it opens a page; what it reads beyond the key API
	// asks for the admin token, which the page sends from its settings.
	a.route(public, get, "/", takes(), a.handle(a.serveDashboard))
	a.route(public, get, "/ui/{asset}", takes(), a.handle(a.serveAsset))
	a.route(admin, get, "/pools", takes(), a.handle(a.listPools))
	a.route(admin, get, "/pools/{pool}", takes(), a.handle(a.getPool))
	a.route(admin, put, "/pools/{pool}", takes(), a.handle(a.putPool))
	a.route(admin, del, "/pools/{pool}", takes("deleteKeys"), a.handle(a.deletePool))
	a.route(admin, get, "/pools/{pool}/keys", takes("after", "limit"), a.handle(a.listPoolKeys))
	// A key by its name: read as GET /keys/{id}, deleted as DELETE /keys/{id}.
	a.route(client, get, "/pools/{pool}/keys/{name}", takes("lease"), a.handle(a.getKeyByName))
	a.route(admin, del, "/pools/{pool}/keys/{name}", takes(), a.handle(a.deleteKeyByName))
	a.route(admin, get, "/activity", takes("pool", "minutes"), a.handle(a.activity))
	a.route(admin, get, "/activity/lease-durations", takes("pool", "minutes"), a.handle(a.leaseDurations))

	for _, method := range []string{get, head} {
		a.route(health, method, "/healthz", takes(), a.handle(a.healthz))
		a.route(health, method, "/readyz", takes(), a.handle(a.readyz(cfg.Ready)))
	}
	if cfg.Metrics != nil {
		a.route(metricsRole, get, "/metrics", takes(), cfg.Metrics.Handler())
	}
	// The contract of the API is no secret.
	a.route(public, get, "/openapi.yaml", takes(), a.handle(a.serveOpenAPI))
	a.route(public, get, "/docs", takes(), a.handle(a.serveReference))

	a.routes = map[string]bool{}
	_ = chi.Walk(r, func(_, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		a.routes[route] = true
		return nil
	})
	return a
}

// publicUnless is rolePublic when public is set, else role.
func publicUnless(public bool, role role) role {
	if public {
		return rolePublic
	}
	return role
}

// ServeHTTP serves a request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.router.ServeHTTP(w, r) }

// handle adapts a handler that returns an error.
func (a *API) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			var reqErr *requestError
			if r.Context().Err() != nil && !errors.As(err, &reqErr) {
				// The client is gone; there is nobody to answer. (A request
				// the client did not finish sending in time also ends the
				// context, and gets its answer.)
				return
			}
			writeError(w, r, a.logger, err)
		}
	}
}

// allMethods are the methods the API answers to on some route.
var allMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete}

// methodNotAllowed answers 405 with the Allow header listing what the path
// does accept. The router also sends here methods it does not know, on any
// path; a path that takes no method at all is an unknown route.
func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, method := range allMethods {
		if a.router.Match(chi.NewRouteContext(), method, r.URL.Path) {
			allowed = append(allowed, method)
		}
	}
	if len(allowed) == 0 {
		writeError(w, r, a.logger, invalid(errRouteNotFound, "no route %s %s", r.Method, r.URL.Path))
		return
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, r, a.logger, invalid(errMethodNotAllowed, "%s is not allowed on %s; allowed: %s",
		r.Method, r.URL.Path, strings.Join(allowed, ", ")))
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// ErrShuttingDown is what Config.Ready returns once the server has been
// told to stop.
var ErrShuttingDown = errors.New("shutting down")

func (a *API) readyz(ready func(context.Context) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if ready != nil {
			if err := ready(r.Context()); err != nil {
				// Expected while draining, and asked every few seconds.
				if !errors.Is(err, ErrShuttingDown) {
					a.logger.Warn("not ready", "error", err)
				}
				return invalid(errServiceNotReady, "%s", readinessDetail(err))
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return nil
	}
}

func readinessDetail(err error) string {
	switch {
	case errors.Is(err, ErrShuttingDown):
		return "the server is shutting down"
	case errors.Is(err, migrate.ErrPending):
		return "database migrations are not applied yet"
	default:
		return "the database cannot be reached"
	}
}
