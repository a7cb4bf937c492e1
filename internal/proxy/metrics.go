package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's collectors. A proxy serves one pool, so the pool
// label has one value; it is there so that the series of several proxies
// can be told apart and summed in one place.
type metrics struct {
	requests          *prometheus.CounterVec
	duration          prometheus.ObserverVec
	claimDuration     prometheus.Observer
	upstreamResponses *prometheus.CounterVec
	inFlight          prometheus.Gauge
}

func newMetrics(pool string, reg prometheus.Registerer) (*metrics, error) {
	if pool == "" {
		pool = "default"
	}
	labels := prometheus.Labels{"pool": pool}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenorchestrator_proxy_requests_total",
		Help: "Requests through the proxy, by pool and outcome: forwarded, rate_limited (the upstream answered 429 or 503 and the key cools down), no_key, claim_failed, unusable_secret, upstream_error, upstream_timeout, lease_lost, canceled.",
	}, []string{"pool", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tokenorchestrator_proxy_request_duration_seconds",
		Help: "Time from a request's arrival until its answer ended and its key was released, by pool and outcome.",
		// Streamed answers last minutes.
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
	}, []string{"pool", "outcome"})
	claimDuration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "tokenorchestrator_proxy_claim_duration_seconds",
		Help:    "Time a request waited for its key (or for the answer that none was free), by pool.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"pool"})
	upstream := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tokenorchestrator_proxy_upstream_responses_total",
		Help: "Answers of the upstream, by pool and status code.",
	}, []string{"pool", "code"})
	inFlight := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tokenorchestrator_proxy_requests_in_flight",
		Help: "Requests in the proxy now, waiting for a key or forwarded, by pool.",
	}, []string{"pool"})
	if reg != nil {
		for _, c := range []prometheus.Collector{requests, duration, claimDuration, upstream, inFlight} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	m := &metrics{
		requests:          requests.MustCurryWith(labels),
		duration:          duration.MustCurryWith(labels),
		claimDuration:     claimDuration.With(labels),
		upstreamResponses: upstream.MustCurryWith(labels),
		inFlight:          inFlight.With(labels),
	}
	// Every outcome is exported from the start, at 0, so that a rate of
	// one is defined before it first happens.
	for _, o := range outcomes {
		m.requests.WithLabelValues(o)
	}
	return m, nil
}
