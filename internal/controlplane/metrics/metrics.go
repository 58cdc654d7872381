// Package metrics holds Baton's Prometheus collectors. They live in a
// registry owned by the server, not in the global default registry.
package metrics

import (
	"time"

	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's collectors.
type Metrics struct {
	reg         *prometheus.Registry
	invocations *prometheus.CounterVec
	errors      *prometheus.CounterVec
	coldStarts  *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	wait        *prometheus.HistogramVec
	instances   *prometheus.GaugeVec
	queue       *prometheus.GaugeVec
	rejected    *prometheus.CounterVec
	asyncDepth  *prometheus.GaugeVec
	asyncOldest *prometheus.GaugeVec
	asyncEvents *prometheus.CounterVec
}

// New registers Baton's collectors in a fresh registry.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 18) // 0.5 ms .. ~65 s
	m.invocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_invocations_total", Help: "Invocations by function and outcome status.",
	}, []string{"function", "status"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_invocation_errors_total", Help: "Invocations that did not succeed, by function and status.",
	}, []string{"function", "status"})
	m.coldStarts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_cold_starts_total", Help: "Invocations that waited for a new instance.",
	}, []string{"function"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "baton_invocation_duration_seconds", Help: "End-to-end invocation latency inside Baton (wait + init + execution).", Buckets: buckets,
	}, []string{"function"})
	m.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "baton_invocation_wait_seconds", Help: "Time invocations waited for an instance slot.", Buckets: buckets,
	}, []string{"function"})
	m.instances = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baton_instances", Help: "Instances per function and state (ready, starting).",
	}, []string{"function", "state"})
	m.queue = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baton_queue_depth", Help: "Requests waiting for an instance, per function.",
	}, []string{"function"})
	m.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_rejected_total", Help: "Requests refused before they ran (queue full, shutting down), by function and reason.",
	}, []string{"function", "reason"})
	m.asyncDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baton_async_queue_depth", Help: "Asynchronous events waiting or running, per function (read every few seconds).",
	}, []string{"function"})
	m.asyncOldest = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "baton_async_oldest_event_age_seconds", Help: "Age of the oldest asynchronous event waiting or running, per function (0 when none; read every few seconds).",
	}, []string{"function"})
	m.asyncEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "baton_async_events_total", Help: "Asynchronous event deliveries by outcome: succeeded, retried, failed, dead-lettered, expired, throttled.",
	}, []string{"function", "outcome"})
	m.reg.MustRegister(m.asyncDepth, m.asyncOldest, m.asyncEvents, m.rejected, m.invocations, m.errors, m.coldStarts, m.latency, m.wait, m.instances, m.queue,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// ObserveAsyncDepth sets a function's asynchronous backlog.
func (m *Metrics) ObserveAsyncDepth(function string, depth int) {
	m.asyncDepth.WithLabelValues(function).Set(float64(depth))
}

// ObserveAsyncOldest sets the age of a function's oldest asynchronous
// event.
func (m *Metrics) ObserveAsyncOldest(function string, age time.Duration) {
	m.asyncOldest.WithLabelValues(function).Set(age.Seconds())
}

// ObserveAsyncOutcome counts how one delivery of an asynchronous event
// ended.
func (m *Metrics) ObserveAsyncOutcome(function, outcome string) {
	m.asyncEvents.WithLabelValues(function, outcome).Inc()
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// ObserveInvocation records one finished invocation.
func (m *Metrics) ObserveInvocation(function, status string, cold bool, total, wait float64) {
	m.invocations.WithLabelValues(function, status).Inc()
	if status != "success" {
		m.errors.WithLabelValues(function, status).Inc()
	}
	if cold {
		m.coldStarts.WithLabelValues(function).Inc()
	}
	m.latency.WithLabelValues(function).Observe(total)
	m.wait.WithLabelValues(function).Observe(wait)
}

// ObserveRejection counts a request refused before it ran.
func (m *Metrics) ObserveRejection(function, reason string) {
	m.rejected.WithLabelValues(function, reason).Inc()
}

// ObserveInstances implements router.Observer.
func (m *Metrics) ObserveInstances(function string, ready, starting int) {
	m.instances.WithLabelValues(function, "ready").Set(float64(ready))
	m.instances.WithLabelValues(function, "starting").Set(float64(starting))
}

// ObserveQueue implements router.Observer.
func (m *Metrics) ObserveQueue(function string, depth int) {
	m.queue.WithLabelValues(function).Set(float64(depth))
}

// Forget drops a deleted function's series.
func (m *Metrics) Forget(function string) {
	for _, v := range []*prometheus.CounterVec{m.invocations, m.errors, m.rejected} {
		v.DeletePartialMatch(prometheus.Labels{"function": function})
	}
	m.coldStarts.DeleteLabelValues(function)
	m.latency.DeleteLabelValues(function)
	m.wait.DeleteLabelValues(function)
	m.instances.DeletePartialMatch(prometheus.Labels{"function": function})
	m.queue.DeleteLabelValues(function)
}
