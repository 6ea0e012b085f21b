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
	exits      *prometheus.CounterVec
	badFrames  *prometheus.CounterVec
	denials    *prometheus.CounterVec
	hidden     *prometheus.GaugeVec

	bridgeRefused *prometheus.CounterVec
	bridgeEnded   *prometheus.CounterVec

	procCPU    *prometheus.GaugeVec
	procMem    *prometheus.GaugeVec
	procMemMax *prometheus.GaugeVec
	procRead   *prometheus.GaugeVec
	procWrite  *prometheus.GaugeVec

	httpMetrics
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
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_upstream_exits_total", Help: "Upstream processes that ended, by reason (oom, timeout, exit).",
		}, []string{"upstream", "reason"}),
		badFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_rejected_frames_total", Help: "Malformed, oversized or batched frames rejected, by peer and reason.",
		}, []string{"peer", "reason"}),
		hidden: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "symbi_upstream_tools_hidden", Help: "Upstream tools held back by verification or quarantine (unsigned in strict mode, invalid, changed, pending).",
		}, []string{"upstream"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "symbi_denials_total", Help: "Requests refused by a security step, by method and step.",
		}, []string{"method", "step"}),
	}
	m.bridgeRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "symbi_bridged_calls_refused_total", Help: "Bridged calls refused because a bound on pending calls was reached, by limit (identity, total, shutdown).",
	}, []string{"limit"})
	m.bridgeEnded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "symbi_bridged_calls_ended_total", Help: "Bridged calls that ended, by upstream and outcome (completed, expired, cancelled, abandoned).",
	}, []string{"upstream", "outcome"})
	r.MustRegister(m.bridgeRefused, m.bridgeEnded)
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"upstream", "tier"})
	}
	m.procCPU = gauge("symbi_upstream_cpu_seconds", "CPU time used by a sandboxed upstream's container.")
	m.procMem = gauge("symbi_upstream_memory_bytes", "Memory used by a sandboxed upstream's container.")
	m.procMemMax = gauge("symbi_upstream_memory_limit_bytes", "Memory limit of a sandboxed upstream's container.")
	m.procRead = gauge("symbi_upstream_io_read_bytes", "Bytes read from block devices by a sandboxed upstream's container.")
	m.procWrite = gauge("symbi_upstream_io_write_bytes", "Bytes written to block devices by a sandboxed upstream's container.")
	m.httpMetrics = newHTTPMetrics(r)
	r.MustRegister(m.procCPU, m.procMem, m.procMemMax, m.procRead, m.procWrite)
	r.MustRegister(m.requests, m.errors, m.latency, m.upstreamUp, m.restarts, m.exits, m.badFrames, m.denials, m.hidden,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
