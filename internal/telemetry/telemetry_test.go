package telemetry_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
)

func TestEnabledByTheStandardVariables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, true},
	} {
		getenv := func(k string) string { return tc.env[k] }
		require.Equal(t, tc.want, telemetry.Enabled(getenv), "%v", tc.env)
		tracing, err := telemetry.Setup(context.Background(), telemetry.Config{Getenv: getenv})
		require.NoError(t, err)
		require.Equal(t, tc.want, tracing.Provider() != nil, "%v", tc.env)
		require.NoError(t, tracing.Shutdown(context.Background()))
	}
}

// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES reach the spans' resource.
func TestResourceFromTheEnvironment(t *testing.T) {
	t.Setenv("OTEL_SERVICE_NAME", "orchestrator-eu")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=staging")
	exporter := tracetest.NewInMemoryExporter()
	tracing, err := telemetry.Setup(context.Background(), telemetry.Config{Exporter: exporter})
	require.NoError(t, err)
	_, span := tracing.Provider().Tracer("test").Start(context.Background(), "s")
	span.End()
	// Read before the shutdown, which empties the exporter.
	spans := exporter.GetSpans()
	require.NoError(t, tracing.Shutdown(context.Background()))
	require.Len(t, spans, 1)
	attrs := map[string]string{}
	for _, kv := range spans[0].Resource.Attributes() {
		attrs[string(kv.Key)] = kv.Value.String()
	}
	require.Equal(t, "orchestrator-eu", attrs["service.name"])
	require.Equal(t, "staging", attrs["deployment.environment.name"])
	require.NotEmpty(t, attrs["service.version"])
}

func TestLogLinesCarryTheSpan(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("component", "test")
	traceID, _ := trace.TraceIDFromHex("0123456789abcdef0123456789abcdef")
	spanID, _ := trace.SpanIDFromHex("0123456789abcdef")
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: spanID, TraceFlags: trace.FlagsSampled,
	}))
	logger.InfoContext(ctx, "inside")
	require.Contains(t, buf.String(), `"trace_id":"0123456789abcdef0123456789abcdef","span_id":"0123456789abcdef"`)
	buf.Reset()
	logger.Info("outside")
	require.NotContains(t, buf.String(), "trace_id")
}
