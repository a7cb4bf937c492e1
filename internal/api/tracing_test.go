package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/telemetry"
	"github.com/tokenorchestrator/tokenorchestrator/internal/testkit/testdb"
)

func newTracedServer(t *testing.T, o ...options) (*testServer, *tracetest.InMemoryExporter, *syncBuffer) {
	t.Helper()
	exporter := tracetest.NewInMemoryExporter()
	tracing, err := telemetry.Setup(context.Background(), telemetry.Config{Exporter: exporter})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tracing.Shutdown(context.Background()) })
	logs := &syncBuffer{}
	var opts options
	if len(o) > 0 {
		opts = o[0]
	}
	opts.tracer, opts.logs = tracing.Provider(), logs
	return newServer(t, testdb.New(t), opts), exporter, logs
}

func attr(s tracetest.SpanStub, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// spansOfTrace returns the spans of one trace.
func spansOfTrace(spans tracetest.SpanStubs, id trace.TraceID) tracetest.SpanStubs {
	var out tracetest.SpanStubs
	for _, s := range spans {
		if s.SpanContext.TraceID() == id {
			out = append(out, s)
		}
	}
	return out
}

// traceparent makes a caller's trace context: the request's span joins it.
func traceparent(t *testing.T, n int) (string, trace.TraceID) {
	t.Helper()
	id, err := trace.TraceIDFromHex(fmt.Sprintf("%032x", 0xabc000+n))
	require.NoError(t, err)
	return fmt.Sprintf("00-%s-%016x-01", id, 0xdef000+n), id
}

// A request is one span named after its route and status, its statements
// are spans inside it, and its log lines carry its trace id.
func TestRequestSpansAndTheirStatements(t *testing.T) {
	t.Parallel()
	s, exporter, logs := newTracedServer(t)

	tp, traceID := traceparent(t, 1)
	created := do(t, "POST", s.url+"/keys?pool=traced", `{"count": 2}`, "traceparent", tp)
	require.Equal(t, http.StatusCreated, created.status)
	tp2, traceID2 := traceparent(t, 2)
	keyID := created.body["keys"].([]any)[0].(map[string]any)["keyId"].(string)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys/"+keyID, "", "traceparent", tp2).status)
	tp3, traceID3 := traceparent(t, 3)
	require.Equal(t, http.StatusNotFound, do(t, "GET", s.url+"/keys/"+unknownID, "", "traceparent", tp3).status)

	spans := exporter.GetSpans()
	create := spansOfTrace(spans, traceID)
	var request tracetest.SpanStub
	for _, sp := range create {
		if sp.SpanKind == trace.SpanKindServer {
			request = sp
		}
	}
	require.Equal(t, "POST /keys", request.Name, "spans of the create request: %v", names(create))
	require.Equal(t, fmt.Sprintf("%016x", 0xdef001), request.Parent.SpanID().String(), "the caller's span is the parent")
	route, _ := attr(request, "http.route")
	require.Equal(t, "/keys", route.AsString())
	status, _ := attr(request, "http.response.status_code")
	require.EqualValues(t, http.StatusCreated, status.AsInt64())

	var statement tracetest.SpanStub
	for _, sp := range create {
		if sp.Name == "KeyCreate" {
			statement = sp
		}
	}
	require.Equal(t, request.SpanContext.SpanID(), statement.Parent.SpanID(), "the statement is a child of the request: %v", names(create))
	text, _ := attr(statement, "db.query.text")
	require.Contains(t, text.AsString(), "$1", "the text keeps its placeholders")
	system, _ := attr(statement, "db.system.name")
	require.Equal(t, "postgresql", system.AsString())

	// Named after the route, never the path with its key id.
	get := spansOfTrace(spans, traceID2)
	require.Contains(t, names(get), "GET /keys/{id}")
	require.NotContains(t, strings.Join(names(spans), " "), keyID)
	for _, sp := range spansOfTrace(spans, traceID3) {
		if sp.SpanKind == trace.SpanKindServer {
			status, _ := attr(sp, "http.response.status_code")
			require.EqualValues(t, http.StatusNotFound, status.AsInt64())
		}
	}

	// The request's log line names its trace and span.
	var logged bool
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "msg=request") && strings.Contains(line, "route=/keys ") && strings.Contains(line, "method=POST") {
			require.Contains(t, line, "trace_id="+traceID.String())
			require.Contains(t, line, "span_id="+request.SpanContext.SpanID().String())
			logged = true
		}
	}
	require.True(t, logged, "no request line in the logs:\n%s", logs.String())
}

// Requests that share a batch statement are each linked from the batch's
// span, whose statement is its child; no span carries a lease token.
func TestBatchSpansLinkTheirRequests(t *testing.T) {
	t.Parallel()
	s, exporter, _ := newTracedServer(t)
	const n = 8
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=b", fmt.Sprintf(`{"count": %d}`, n)).status)

	type claimed struct {
		id, token string
		trace     trace.TraceID
	}
	claims := make([]claimed, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tp, id := traceparent(t, 100+i)
			r := do(t, "GET", s.url+"/keys?pool=b", "", "traceparent", tp)
			require.Equal(t, http.StatusOK, r.status)
			claims[i] = claimed{id: r.str("keyId"), token: r.str("leaseToken"), trace: id}
		})
	}
	wg.Wait()
	for i := range n {
		wg.Go(func() {
			tp, id := traceparent(t, 200+i)
			r := do(t, "PUT", s.url+"/keys/"+claims[i].id+"?lease="+claims[i].token, "", "traceparent", tp)
			require.Equal(t, http.StatusOK, r.status)
			claims[i].trace = id
		})
	}
	wg.Wait()

	spans := exporter.GetSpans()
	batches := map[string]int{}
	for i := range n {
		for _, phase := range []struct {
			batch, statement string
			trace            trace.TraceID
		}{
			{"store.ClaimBatch", "KeyClaim", mustTraceID(t, 100+i)},
			{"store.ReleaseBatch", "KeyReleaseMany", mustTraceID(t, 200+i)},
		} {
			var request tracetest.SpanStub
			for _, sp := range spansOfTrace(spans, phase.trace) {
				if sp.SpanKind == trace.SpanKindServer {
					request = sp
				}
			}
			require.True(t, request.SpanContext.IsValid(), "no request span in trace %s", phase.trace)
			batch, ok := linking(spans, phase.batch, request.SpanContext)
			require.True(t, ok, "no %s links to request %d's span", phase.batch, i)
			require.NotEqual(t, phase.trace, batch.SpanContext.TraceID(), "a batch starts its own trace")
			batches[batch.SpanContext.SpanID().String()]++
			var statement bool
			for _, sp := range spans {
				if sp.Name == phase.statement && sp.Parent.SpanID() == batch.SpanContext.SpanID() {
					statement = true
				}
			}
			require.True(t, statement, "%s has no %s child", phase.batch, phase.statement)
		}
	}
	t.Logf("%d requests served by %d batch statements", 2*n, len(batches))

	// The SQL text has placeholders only: no bound value (a lease token in
	// a ?lease= query, a key id) is an attribute of any statement's span.
	for _, sp := range spans {
		if sp.SpanKind != trace.SpanKindClient {
			continue
		}
		for _, kv := range sp.Attributes {
			for _, c := range claims {
				require.NotContains(t, kv.Value.String(), c.id, "span %s attribute %s", sp.Name, kv.Key)
				require.NotContains(t, kv.Value.String(), "lease="+c.token, "span %s attribute %s", sp.Name, kv.Key)
			}
		}
	}
}

func mustTraceID(t *testing.T, n int) trace.TraceID {
	_, id := traceparent(t, n)
	return id
}

// linking returns the span of the given name that links to sc.
func linking(spans tracetest.SpanStubs, name string, sc trace.SpanContext) (tracetest.SpanStub, bool) {
	for _, sp := range spans {
		if sp.Name != name {
			continue
		}
		for _, l := range sp.Links {
			if l.SpanContext.Equal(sc) {
				return sp, true
			}
		}
	}
	return tracetest.SpanStub{}, false
}

func names(spans tracetest.SpanStubs) []string {
	out := make([]string, len(spans))
	for i, s := range spans {
		out[i] = s.Name
	}
	return out
}

// Off, nothing is traced: a request that carries a caller's trace
// context starts no span, and its log line names no trace.
func TestNothingTracedWhenOff(t *testing.T) {
	t.Parallel()
	// The environment of a server with tracing off.
	tracing, err := telemetry.Setup(context.Background(), telemetry.Config{Getenv: func(string) string { return "" }})
	require.NoError(t, err)
	require.Nil(t, tracing.Provider())

	logs := &syncBuffer{}
	s := newServer(t, testdb.New(t), options{tracer: tracing.Provider(), logs: logs})
	tp, traceID := traceparent(t, 7)
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=off", `{"count": 1}`, "traceparent", tp).status)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=off", "", "traceparent", tp).status)
	require.Contains(t, logs.String(), "msg=request")
	require.NotContains(t, logs.String(), "trace_id=")
	require.NotContains(t, logs.String(), traceID.String())
}

// A pass of the background job is one trace, its statements inside it;
// statements outside any trace (the gauges read at a scrape) make none.
func TestSweeperPassesAreTraced(t *testing.T) {
	t.Parallel()
	s, exporter, _ := newTracedServer(t, options{leaseTTL: 200 * time.Millisecond, sweep: 50 * time.Millisecond})
	require.Equal(t, http.StatusCreated, do(t, "POST", s.url+"/keys?pool=swept", `{"count": 1}`).status)
	require.Equal(t, http.StatusOK, do(t, "GET", s.url+"/keys?pool=swept", "").status)
	var pass, statement tracetest.SpanStub
	require.Eventually(t, func() bool {
		for _, sp := range exporter.GetSpans() {
			if released, _ := attr(sp, "sweeper.leases_released"); sp.Name == "sweeper.pass" && released.AsInt64() == 1 {
				pass = sp
			}
		}
		return pass.SpanContext.IsValid()
	}, 10*time.Second, 20*time.Millisecond, "no pass released the lease")
	for _, sp := range exporter.GetSpans() {
		if sp.Name == "KeyReleaseEndedLeases" && sp.Parent.SpanID() == pass.SpanContext.SpanID() {
			statement = sp
		}
	}
	require.True(t, statement.SpanContext.IsValid(), "the pass's statement is its child")

	resp, err := http.Get(s.url + "/metrics")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
	for _, sp := range exporter.GetSpans() {
		require.NotEqual(t, "PoolCountsList", sp.Name, "a statement outside any trace was traced")
		if sp.SpanKind == trace.SpanKindClient {
			require.True(t, sp.Parent.IsValid(), "statement %s has no parent", sp.Name)
		}
	}
}
