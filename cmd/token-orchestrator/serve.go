package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
)

func serve(args []string) int {
	cfg, err := config.Load(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "token-orchestrator: configuration:", err)
		return 2
	}
	logger := newLogger(cfg)
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tracing, err := telemetry.Setup(ctx, telemetry.Config{Getenv: os.Getenv})
	if err != nil {
		logger.Error("start failed", "error", err)
		return 1
	}
	defer func() {
		// The spans of the last requests are still buffered.
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(shutdownCtx); err != nil {
			logger.Warn("tracing: spans not exported", "error", err)
		}
	}()
	var opts []server.Option
	if tp := tracing.Provider(); tp != nil {
		logger.Info("tracing on (OTEL_* environment)")
		opts = append(opts, server.WithTracerProvider(tp))
	}
	srv, err := server.New(ctx, cfg, logger, opts...)
	if err != nil {
		logger.Error("start failed", "error", err)
		return 1
	}
	if err := srv.Run(ctx); err != nil {
		logger.Error("server failed", "error", err)
		return 1
	}
	return 0
}

func newLogger(cfg config.Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	// Lines logged within a traced request carry its trace_id and span_id.
	if cfg.LogFormat == "json" {
		return slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(os.Stderr, opts)))
	}
	return slog.New(telemetry.NewLogHandler(slog.NewTextHandler(os.Stderr, opts)))
}
