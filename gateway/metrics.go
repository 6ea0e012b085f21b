package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the gateway's Prometheus series. They live in their own registry so that
// tests and several gateways in one process never collide.
type Metrics struct {
	Registry *prometheus.Registry

	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	upstreamUp *prometheus.GaugeVec
	restarts   *prometheus.CounterVec
	badFrames  *prometheus.CounterVec
	denials    *prometheus.CounterVec
}

// NewMetrics registers the gateway's series (plus Go and process collectors) in a new
// registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_requests_total", Help: "MCP requests handled, by method, upstream and tool.",
		}, []string{"method", "upstream", "tool"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_request_errors_total", Help: "MCP requests that failed (protocol error or tool error), by method, upstream, tool and kind.",
		}, []string{"method", "upstream", "tool", "kind"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "symbi_request_duration_seconds",
			Help:    "Latency of MCP requests through the gateway, by method, upstream and tool.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "upstream", "tool"}),
		upstreamUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symbi_upstream_up", Help: "1 when the upstream is connected, 0 otherwise.",
		}, []string{"upstream"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_upstream_restarts_total", Help: "Reconnects or restarts of an upstream after it went down.",
		}, []string{"upstream"}),
		badFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_rejected_frames_total", Help: "Malformed, oversized or batched frames rejected, by peer and reason.",
		}, []string{"peer", "reason"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_denials_total", Help: "Requests refused by a security step, by method and step.",
		}, []string{"method", "step"}),
	}
	r.MustRegister(m.requests, m.errors, m.latency, m.upstreamUp, m.restarts, m.badFrames, m.denials,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
