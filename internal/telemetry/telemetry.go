// Package telemetry sets up OpenTelemetry tracing from the standard OTEL_*
// environment variables, and puts the current trace into log lines.
//
// Tracing is off unless asked for: by OTEL_TRACES_EXPORTER (otlp, console),
// or by an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true turns it off
// whatever else is set. Off, nothing is traced: the HTTP and database
// instrumentation is not installed at all, and requests pay nothing for it.
// On, the SDK reads everything else itself: OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*, and the
// exporter's own OTEL_EXPORTER_OTLP_* settings (protocol, headers, TLS).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/buildinfo"
)

// ServiceName names the service in traces unless OTEL_SERVICE_NAME (or
// service.name in OTEL_RESOURCE_ATTRIBUTES) says otherwise.
const ServiceName = "token-orchestrator"

// Config says how to set tracing up.
type Config struct {
	// Getenv reads the environment. Defaults to none (tracing off); the
	// program passes os.Getenv.
	Getenv func(string) string
	// Exporter, when set, receives the spans instead of the exporter that
	// the environment names, and turns tracing on; tests pass an in-memory
	// one. Spans are then exported as they end, not in batches.
	Exporter sdktrace.SpanExporter
}

// Tracing is the tracer provider of the process, or none when tracing is
// off.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// Enabled tells whether the environment asks for tracing.
func Enabled(getenv func(string) string) bool {
	if getenv == nil {
		return false
	}
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	for _, exporter := range strings.Split(getenv("OTEL_TRACES_EXPORTER"), ",") {
		if e := strings.TrimSpace(exporter); e != "" && e != "none" {
			return true
		}
	}
	if strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")) == "none" {
		return false
	}
	return strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")) != "" ||
		strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) != ""
}

// Setup returns the process's tracing: off (Provider returns nil) unless
// the environment asks for it or an exporter is given.
func Setup(ctx context.Context, cfg Config) (*Tracing, error) {
	exporter := cfg.Exporter
	if exporter == nil {
		if !Enabled(cfg.Getenv) {
			return &Tracing{}, nil
		}
		var err error
		if exporter, err = autoexport.NewSpanExporter(ctx); err != nil {
			return nil, fmt.Errorf("tracing (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*): %w", err)
		}
	}
	// The default resource reads OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES; ours comes first so that they win.
	res, err := resource.Merge(resource.NewSchemaless(
		semconv.ServiceName(ServiceName),
		semconv.ServiceVersion(buildinfo.Version()),
	), resource.Default())
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, fmt.Errorf("tracing resource (OTEL_RESOURCE_ATTRIBUTES): %w", err)
	}
	processor := sdktrace.WithBatcher(exporter)
	if cfg.Exporter != nil {
		processor = sdktrace.WithSyncer(exporter)
	}
	// The sampler is read from OTEL_TRACES_SAMPLER; the default follows the
	// caller's decision and samples every root.
	return &Tracing{provider: sdktrace.NewTracerProvider(processor, sdktrace.WithResource(res))}, nil
}

// Provider is the tracer provider, nil when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider
}

// Shutdown exports the spans still buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.provider == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Propagator reads and writes the W3C trace context and baggage headers,
// so that a request's span joins its caller's trace.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})
