package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
)

// profiler serves Go's profiler on its own address. It is off by default:
// profiles show internals no API client should see.
type profiler struct {
	// Runner gives the profiler Stop and Started.
	startstop.Runner
	addr   string
	logger *slog.Logger
}

// Start listens on the profiler's address and serves in the background
// until Stop is called or ctx ends.
func (p *profiler) Start(ctx context.Context) error {
	return p.StartWith(ctx, func() (func(context.Context), error) {
		l, err := net.Listen("tcp", p.addr)
		if err != nil {
			return nil, err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		p.logger.Info("serving the profiler", "addr", p.addr)
		return func(ctx context.Context) {
			stopped := context.AfterFunc(ctx, func() { _ = srv.Close() })
			defer stopped()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				p.logger.Warn("profiler", "error", err)
			}
		}, nil
	})
}
