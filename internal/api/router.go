// Package api is the HTTP interface of the key pool: every route in one
// router, handlers that return errors, and one function that turns errors
// into problem details.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/tokenorchestrator/tokenorchestrator/internal/metrics"
	"github.com/tokenorchestrator/tokenorchestrator/internal/store"
	"github.com/tokenorchestrator/tokenorchestrator/internal/wakeup"
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
	// migrations applied.
	Ready func(context.Context) error
	// Waiters serves GET /keys?wait=. Nil: a hub over Store that is fed no
	// notifications, whose waiters find freed keys by polling.
	Waiters *wakeup.Hub
}

// API serves the HTTP interface.
type API struct {
	store   *store.Store
	waiters *wakeup.Hub
	logger  *slog.Logger
	router  chi.Router
}

// New builds the API and its router.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Waiters == nil {
		cfg.Waiters = NewWaiters(cfg.Store, 0, cfg.Logger)
	}
	a := &API{store: cfg.Store, waiters: cfg.Waiters, logger: cfg.Logger}
	r := chi.NewRouter()
	a.router = r

	r.Use(middleware.RequestID)
	r.Use(a.recoverer)
	r.Use(a.observe(cfg.Metrics))
	r.Use(cors(cfg.CORSOrigins, cfg.Logger))
	r.Use(limitBody(maxBodyBytes))

	r.NotFound(a.handle(func(w http.ResponseWriter, r *http.Request) error {
		return invalid(errRouteNotFound, "no route %s %s", r.Method, r.URL.Path)
	}))
	r.MethodNotAllowed(a.methodNotAllowed)

	r.Post("/keys", a.handle(a.createKeys))
	r.Get("/keys", a.handle(a.assignKey))
	// HEAD /keys is its own handler: it must never assign a key, as a HEAD
	// answered by the GET handler would.
	r.Head("/keys", a.handle(a.poolAvailability))
	r.Get("/keys/{id}", a.handle(a.getKey))
	r.Head("/keys/{id}", a.handle(a.headKey))
	r.Delete("/keys/{id}", a.handle(a.deleteKey))
	r.Put("/keys/{id}", a.handle(onLease(a.store.Release)))
	r.Put("/keys/{id}/keepalive", a.handle(onLease(a.store.KeepAlive)))
	r.Put("/keepalive/{id}", a.handle(onLease(a.store.KeepAlive)))

	r.Get("/stats", a.handle(a.stats))
	r.Get("/reports", a.handle(a.listReports))
	r.Get("/reports/leases", a.handle(a.report("leases")))
	r.Get("/reports/lease-activity", a.handle(a.report("lease-activity")))
	r.Get("/reports/lease-durations", a.handle(a.report("lease-durations")))
	r.Get("/reports/key-activity", a.handle(a.report("key-activity")))
	r.Get("/reports/utilisation", a.handle(a.report("utilisation")))

	// The dashboard and what it reads beyond the key API.
	r.Get("/", a.handle(a.serveDashboard))
	r.Get("/ui/{asset}", a.handle(a.serveAsset))
	r.Get("/pools/{pool}/keys", a.handle(a.listPoolKeys))
	r.Get("/activity", a.handle(a.activity))
	r.Get("/activity/lease-durations", a.handle(a.leaseDurations))

	r.Get("/healthz", a.handle(a.healthz))
	r.Head("/healthz", a.handle(a.healthz))
	r.Get("/readyz", a.handle(a.readyz(cfg.Ready)))
	r.Head("/readyz", a.handle(a.readyz(cfg.Ready)))
	if cfg.Metrics != nil {
		r.Method(http.MethodGet, "/metrics", cfg.Metrics.Handler())
	}
	r.Get("/openapi.yaml", a.handle(a.serveOpenAPI))
	r.Get("/docs", a.handle(a.serveReference))
	return a
}

// NewWaiters returns a hub that claims keys for waiting clients from the
// store. poll is how often pools with waiters are tried without a
// notification; zero means the hub's default.
func NewWaiters(st *store.Store, poll time.Duration, logger *slog.Logger) *wakeup.Hub {
	return wakeup.New(wakeup.Config{
		Claim: st.ClaimMany,
		GiveBack: func(key store.Key) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := st.Release(ctx, key.ID, key.LeaseToken); err != nil {
				logger.Warn("could not give back a key claimed for a client that left", "key_id", key.ID, "error", err)
			}
		},
		Register:   st.RegisterWaiters,
		Unregister: st.UnregisterWaiters,
		Poll:       poll,
		Logger:     logger,
	})
}

// ServeHTTP serves a request.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.router.ServeHTTP(w, r) }

// handle adapts a handler that returns an error.
func (a *API) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			if r.Context().Err() != nil {
				// The client is gone; there is nobody to answer.
				return
			}
			writeError(w, r, a.logger, err)
		}
	}
}

// allMethods are the methods the API answers to on some route.
var allMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete}

// methodNotAllowed answers 405 with the Allow header listing what the path
// does accept.
func (a *API) methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, method := range allMethods {
		if a.router.Match(chi.NewRouteContext(), method, r.URL.Path) {
			allowed = append(allowed, method)
		}
	}
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	writeError(w, r, a.logger, invalid(errMethodNotAllowed, "%s is not allowed on %s; allowed: %s",
		r.Method, r.URL.Path, strings.Join(allowed, ", ")))
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

func (a *API) readyz(ready func(context.Context) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if ready != nil {
			if err := ready(r.Context()); err != nil {
				a.logger.Warn("not ready", "error", err)
				return invalid(errServiceNotReady, "%s", readinessDetail(err))
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
		return nil
	}
}

func readinessDetail(err error) string {
	if strings.Contains(err.Error(), "migration") {
		return "database migrations are not applied yet"
	}
	return "the database cannot be reached"
}
