package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/tokenorchestrator/tokenorchestrator/internal/config"
	"github.com/tokenorchestrator/tokenorchestrator/internal/server"
	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
)

func serve(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if askedForHelp(args) {
		// Help asked for goes to stdout, as every command's does.
		var help strings.Builder
		if _, err := config.Load(args, getenv, &help); !errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stderr, help.String())
			return exitUsage
		}
		fmt.Fprintln(stdout, "Usage: token-orchestrator [serve] [flags]\n\nServe the HTTP API (the default command). Every flag has an environment\nvariable, named in its description; a flag wins over its variable.\n\nFlags:")
		fmt.Fprint(stdout, strings.TrimPrefix(help.String(), "Usage of token-orchestrator:\n"))
		fmt.Fprintln(stdout, "\n"+exitCodesHelp)
		return exitOK
	}
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "token-orchestrator: configuration:", err)
		return exitUsage
	}
	logger := newLogger(cfg, stderr)
	slog.SetDefault(logger)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tracing, err := telemetry.Setup(ctx, telemetry.Config{Getenv: getenv})
	if err != nil {
		logger.Error("start failed", "error", err)
		return exitFailed
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
		return exitFailed
	}
	if err := srv.Run(ctx); err != nil {
		logger.Error("server failed", "error", err)
		return exitFailed
	}
	return exitOK
}

// askedForHelp reports whether the flags ask for help, as the flag package
// understands it.
func askedForHelp(args []string) bool {
	for _, arg := range args {
		switch arg {
		case "-h", "-help", "--h", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

// serveWords tells completion the flags of serve. The configuration
// package keeps its flag set to itself; its help lists every flag.
func serveWords() words {
	var help strings.Builder
	_, _ = config.Load([]string{"-h"}, noEnv, &help)
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	// The flag package writes "  -name type" for a flag that takes a
	// value, "  -name" for a switch, and the description on the next line.
	for _, m := range flagLine.FindAllStringSubmatch(help.String(), -1) {
		if m[2] == "" {
			fs.Bool(m[1], false, m[3])
		} else {
			fs.String(m[1], "", m[3])
		}
	}
	return words{flags: fs}
}

var flagLine = regexp.MustCompile(`(?m)^  -([\w.-]+)(?: (\w+))?\n\s+(.*)$`)

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	// Lines logged within a traced request carry its trace_id and span_id.
	if cfg.LogFormat == "json" {
		return slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(w, opts)))
	}
	return slog.New(telemetry.NewLogHandler(slog.NewTextHandler(w, opts)))
}
