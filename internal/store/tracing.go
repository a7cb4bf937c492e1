package store

import (
	"context"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracerName names the instrumentation of the database calls.
const tracerName = "github.com/tokenorchestrator/tokenorchestrator/internal/store"

// Tracer makes a span of every statement sent on a connection, named
// after the statement (sqlc's "-- name: KeyClaim" comment). A span carries
// the statement's text, with its placeholders, and never the values bound
// to them: those include lease tokens and secrets. Set it as the
// ConnConfig.Tracer of the pool given to New.
type Tracer struct {
	tracer trace.Tracer
}

// NewTracer returns a Tracer that starts its spans from provider.
func NewTracer(provider trace.TracerProvider) *Tracer {
	return &Tracer{tracer: provider.Tracer(tracerName)}
}

var (
	_ pgx.QueryTracer = (*Tracer)(nil)
	_ pgx.BatchTracer = (*Tracer)(nil)
)

var dbSystem = attribute.String("db.system.name", "postgresql")

// TraceQueryStart starts the statement's span as a child of the caller's.
// A statement outside any trace (a scrape's, a poll's, the leader's
// renewal) gets none: each would be a trace of one span, many a second.
func (t *Tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	name, operation := statementName(data.SQL)
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient))
	// Attributes cost allocations; an unsampled span records none.
	if span.IsRecording() {
		span.SetAttributes(dbSystem,
			attribute.String("db.operation.name", operation),
			attribute.String("db.query.text", data.SQL))
	}
	return ctx
}

// TraceQueryEnd ends the span started by TraceQueryStart (none, when the
// statement had no trace: the context then holds no span to end).
func (t *Tracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("db.response.rows_affected", data.CommandTag.RowsAffected()))
		endWithError(span, data.Err)
	}
	span.End()
}

// TraceBatchStart starts a span for a batch of statements sent together.
func (t *Tracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ctx
	}
	ctx, span := t.tracer.Start(ctx, "batch", trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetAttributes(dbSystem, attribute.String("db.operation.name", "BATCH"),
			attribute.Int("db.operation.batch.size", data.Batch.Len()))
	}
	return ctx
}

// TraceBatchQuery records each statement of the batch as an event.
func (t *Tracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		return
	}
	name, _ := statementName(data.SQL)
	attrs := []attribute.KeyValue{attribute.String("db.query.text", data.SQL)}
	if data.Err != nil {
		attrs = append(attrs, attribute.String("error.type", errorType(data.Err)))
	}
	span.AddEvent(name, trace.WithAttributes(attrs...))
}

// TraceBatchEnd ends the batch's span.
func (t *Tracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		endWithError(span, data.Err)
	}
	span.End()
}

// endWithError marks the span failed. The message is the error's own,
// which for a PostgreSQL error is its message and SQLSTATE: the detail,
// where PostgreSQL puts the values of a row, is left out.
func endWithError(span trace.Span, err error) {
	if err == nil {
		return
	}
	span.SetAttributes(attribute.String("error.type", errorType(err)))
	span.SetStatus(codes.Error, err.Error())
}

func errorType(err error) string {
	if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return "error"
}

// statementName returns the name sqlc gave the statement (its first line is
// "-- name: KeyClaim :many"), else its first word, and the SQL operation
// (its first word after the comments).
func statementName(sql string) (name, operation string) {
	rest := strings.TrimSpace(sql)
	if after, ok := strings.CutPrefix(rest, "-- name: "); ok {
		if fields := strings.Fields(after); len(fields) > 0 {
			name = fields[0]
		}
	}
	for strings.HasPrefix(rest, "--") {
		_, rest, _ = strings.Cut(rest, "\n")
		rest = strings.TrimSpace(rest)
	}
	if end := strings.IndexAny(rest, " \t\n("); end > 0 {
		operation = strings.ToUpper(rest[:end])
	} else {
		operation = strings.ToUpper(rest)
	}
	if name == "" {
		name = operation
	}
	if name == "" {
		name = "query"
	}
	return name, operation
}

// startBatch starts the span of a statement that serves a batch of
// requests, linked to the span of each request it serves. The batch runs
// apart from the requests (they share it, and it outlives a caller that
// gives up), so its span starts a trace of its own, and the links join it
// to theirs. Without tracing it starts nothing.
func (s *Store) startBatch(ctx context.Context, name string, callers func(yield func(trace.SpanContext) bool)) (context.Context, trace.Span) {
	if s.tracer == nil {
		return ctx, trace.SpanFromContext(ctx)
	}
	var links []trace.Link
	for caller := range callers {
		if caller.IsValid() {
			links = append(links, trace.Link{SpanContext: caller})
		}
	}
	ctx, span := s.tracer.Start(ctx, name, trace.WithNewRoot(), trace.WithLinks(links...))
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("batch.requests", len(links)))
	}
	return ctx, span
}
