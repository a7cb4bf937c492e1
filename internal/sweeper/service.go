package sweeper

import (
	"context"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/tokenorchestrator/tokenorchestrator/internal/startstop"
)

// tracerName names the sweeper's tracer.
const tracerName = "github.com/tokenorchestrator/tokenorchestrator/internal/sweeper"

// Service does one chore of the background job, a pass every interval,
// between Start and Stop. A Maintainer makes the services and starts them
// together; each may also be started on its own.
type Service struct {
	// Runner gives the service Stop and Started.
	startstop.Runner
	name     string
	interval time.Duration
	// offset delays the first tick, so that the services of one interval
	// do not all run at the same moment.
	offset time.Duration
	run    func(context.Context) Result
	// slots, when set, is shared by the maintainer's services: a pass
	// takes one while it runs.
	slots chan struct{}
	// cfg is the maintainer's, defaults applied: the logger, the leader
	// gate, the pass hook and the tracer.
	cfg *Config
}

// Name is the service's name, one of ServiceNames: the value of the
// service label of its metrics, and of the service attribute of its log
// lines and spans.
func (s *Service) Name() string { return s.name }

// Interval is the time between two of the service's passes.
func (s *Service) Interval() time.Duration { return s.interval }

// Start runs passes in the background until Stop is called or ctx ends.
func (s *Service) Start(ctx context.Context) error {
	return s.StartFunc(ctx, s.loop)
}

// RunOnce makes one pass of the chore, whether or not this replica leads,
// and tells no hook of it.
func (s *Service) RunOnce(ctx context.Context) Result {
	return s.run(ctx)
}

func (s *Service) loop(ctx context.Context) {
	if s.offset > 0 {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.offset):
		}
	}
	ticker := time.NewTicker(s.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		if s.cfg.Leading != nil && !s.cfg.Leading() {
			continue
		}
		if s.slots != nil {
			select {
			case <-ctx.Done():
				return
			case s.slots <- struct{}{}:
			}
		}
		pass := s.pass(ctx)
		if s.slots != nil {
			<-s.slots
		}
		if ctx.Err() != nil {
			// Cut short by Stop: neither a failure nor a pass to count.
			return
		}
		s.log(pass)
		if s.cfg.OnPass != nil {
			s.cfg.OnPass(pass)
		}
	}
}

// pass runs the chore once, timed, in a span of its own when tracing is on.
func (s *Service) pass(ctx context.Context) Pass {
	start := time.Now()
	if s.cfg.TracerProvider == nil {
		result := s.run(ctx)
		return Pass{Service: s.name, Duration: time.Since(start), Result: result}
	}
	// The service is an attribute from the start, for samplers to see.
	ctx, span := s.cfg.TracerProvider.Tracer(tracerName).Start(ctx, "sweeper.pass",
		trace.WithAttributes(attribute.String("sweeper.service", s.name)))
	defer span.End()
	result := s.run(ctx)
	if span.IsRecording() {
		attrs := []attribute.KeyValue{attribute.Int("sweeper.rows", result.Rows())}
		for _, c := range result.counts() {
			if c.n != 0 {
				attrs = append(attrs, attribute.Int("sweeper."+c.name, c.n))
			}
		}
		span.SetAttributes(attrs...)
		if result.Err != nil {
			span.SetStatus(codes.Error, result.Err.Error())
		}
	}
	return Pass{Service: s.name, Duration: time.Since(start), Result: result}
}

// routine names the services whose passes change rows nearly every time
// while the service is used: their passes are logged at debug level, the
// others' at info.
var routine = map[string]bool{ServicePoolCounts: true, ServiceHistoryRollups: true, ServiceClaimRequests: true}

// log writes a line for a pass that failed or changed rows.
func (s *Service) log(pass Pass) {
	attrs := []any{"service", s.name}
	for _, c := range pass.counts() {
		if c.n != 0 {
			attrs = append(attrs, c.name, c.n)
		}
	}
	switch {
	case pass.Err != nil:
		s.cfg.Logger.Warn("sweep failed", append(attrs, "error", pass.Err)...)
	case pass.Rows() > 0:
		level := slog.LevelInfo
		if routine[s.name] {
			level = slog.LevelDebug
		}
		s.cfg.Logger.Log(context.Background(), level, "sweep", append(attrs, "duration", pass.Duration.Round(time.Millisecond))...)
	}
}
