// Package metrics holds Levee's Prometheus metrics, all named levee_*, on a registry of their
// own. docs/metrics.md lists them with example alerts. A nil *Metrics records nothing, so
// callers need no checks.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the worker's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	JobsFinished       *prometheus.CounterVec   // kind, outcome
	Attempts           *prometheus.CounterVec   // kind, result
	AttemptDuration    *prometheus.HistogramVec // kind
	EndToEnd           *prometheus.HistogramVec // kind
	Backlog            *prometheus.GaugeVec     // kind
	InFlight           *prometheus.GaugeVec     // kind
	HeldAhead          *prometheus.GaugeVec     // kind
	BreakerState       *prometheus.GaugeVec     // kind
	BreakerFailureRate *prometheus.GaugeVec     // kind
	BreakerWindowCalls *prometheus.GaugeVec     // kind
	BreakerNextTrial   *prometheus.GaugeVec     // kind
	BreakerCutOff      *prometheus.GaugeVec     // kind
	RateWait           *prometheus.CounterVec   // kind
	BulkheadUse        *prometheus.GaugeVec     // kind
	DLQDepth           *prometheus.GaugeVec     // reason
	LedgerDuration     *prometheus.HistogramVec // op
	Overruns           *prometheus.CounterVec   // kind
	RunningOverdue     *prometheus.GaugeVec     // kind
	LastChances        *prometheus.CounterVec   // kind
	Dispatched         *prometheus.CounterVec   // origin
	DispatchLateness   prometheus.Histogram
	DispatchErrors     prometheus.Counter
}

// New returns Metrics registered on a fresh registry, with the Go and process collectors.
func New() *Metrics {
	latency := []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		JobsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_jobs_finished_total",
			Help: "Jobs finished by this worker, by kind and outcome (succeeded, dead, fell_back, duplicate).",
		}, []string{"kind", "outcome"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_attempts_total",
			Help: "Attempts by kind and result class (success, retry, timeout, permanent, abandoned).",
		}, []string{"kind", "result"}),
		AttemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "levee_attempt_duration_seconds", Help: "Duration of attempts (handler calls).", Buckets: latency,
		}, []string{"kind"}),
		EndToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "levee_job_latency_seconds", Help: "Time from publish to a final outcome.", Buckets: latency,
		}, []string{"kind"}),
		Backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_backlog", Help: "Jobs of the kind waiting in the stream, not yet delivered.",
		}, []string{"kind"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_in_flight", Help: "Attempts of the kind running in this worker.",
		}, []string{"kind"}),
		HeldAhead: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_held_ahead",
			Help: "Jobs of the kind this worker pulled and claimed ahead of a free slot (design rule 16): claimed, waiting for their handler call.",
		}, []string{"kind"}),
		BreakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_breaker_state",
			Help: "Circuit breaker state as this worker sees it (the fleet's, for a shared breaker): 0 closed, 1 half-open, 2 open.",
		}, []string{"kind"}),
		BreakerFailureRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_breaker_failure_rate",
			Help: "Failed calls over calls in the breaker's window (the fleet's, as this worker has heard it), 0 to 1; 0 without calls.",
		}, []string{"kind"}),
		BreakerWindowCalls: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_breaker_window_calls",
			Help: "Calls in the breaker's window (the fleet's, as this worker has heard them).",
		}, []string{"kind"}),
		BreakerNextTrial: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_breaker_next_trial_seconds",
			Help: "Seconds until an open breaker goes half-open and admits trial calls; 0 unless open.",
		}, []string{"kind"}),
		BreakerCutOff: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_breaker_cut_off",
			Help: "1 while this worker cannot reach the fleet's breaker record and decides alone, else 0.",
		}, []string{"kind"}),
		RateWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_rate_limiter_wait_seconds_total", Help: "Time the kind's pull loop waited for rate tokens.",
		}, []string{"kind"}),
		BulkheadUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_bulkhead_saturation", Help: "Share of the kind's per-worker slots in use, 0 to 1.",
		}, []string{"kind"}),
		DLQDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_dlq_depth", Help: "Jobs in the dead-letter queue, by reason.",
		}, []string{"reason"}),
		LedgerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "levee_ledger_duration_seconds", Help: "Round trips to the Postgres ledger, by operation.", Buckets: latency,
		}, []string{"op"}),
		Overruns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_handler_overruns_total", Help: "Attempts whose handler kept running past its timeout (ignoring its context).",
		}, []string{"kind"}),
		RunningOverdue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "levee_handlers_overdue", Help: "Handlers of the kind running now past their timeout.",
		}, []string{"kind"}),
		LastChances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "levee_last_chances_total",
			Help: "Jobs run alone in this worker as their last chance (last delivery, or attempts lost with their workers).",
		}, []string{"kind"}),
	}
	m.Dispatched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "levee_scheduled_dispatched_total",
		Help: "Jobs this worker's dispatcher published from the ledger to their stream, by origin (delay, tx, periodic).",
	}, []string{"origin"})
	m.DispatchLateness = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "levee_dispatch_lateness_seconds", Help: "How late the dispatcher published a due job: from its run_at to the publish.", Buckets: latency,
	})
	m.DispatchErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "levee_dispatch_errors_total", Help: "Due jobs whose publish failed; each stays in the ledger and is tried again.",
	})
	m.Registry.MustRegister(m.Dispatched, m.DispatchLateness, m.DispatchErrors)
	m.Registry.MustRegister(m.JobsFinished, m.Attempts, m.AttemptDuration, m.EndToEnd, m.Backlog, m.InFlight, m.HeldAhead,
		m.BreakerState, m.BreakerFailureRate, m.BreakerWindowCalls, m.BreakerNextTrial, m.BreakerCutOff,
		m.RateWait, m.BulkheadUse, m.DLQDepth, m.LedgerDuration, m.Overruns, m.RunningOverdue, m.LastChances,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Dispatch counts a job the dispatcher published from the ledger, and how late it was.
func (m *Metrics) Dispatch(origin string, lateness time.Duration) {
	if m == nil {
		return
	}
	m.Dispatched.WithLabelValues(origin).Inc()
	m.DispatchLateness.Observe(max(lateness, 0).Seconds())
}

// DispatchFailed counts due jobs whose publish failed.
func (m *Metrics) DispatchFailed(n int) {
	if m == nil || n == 0 {
		return
	}
	m.DispatchErrors.Add(float64(n))
}

// LastChance counts a job run alone as its last chance.
func (m *Metrics) LastChance(kind string) {
	if m == nil {
		return
	}
	m.LastChances.WithLabelValues(kind).Inc()
}

// Finished counts a job's final outcome and its end-to-end latency.
func (m *Metrics) Finished(kind, outcome string, enqueuedAt time.Time) {
	if m == nil {
		return
	}
	m.JobsFinished.WithLabelValues(kind, outcome).Inc()
	if !enqueuedAt.IsZero() {
		m.EndToEnd.WithLabelValues(kind).Observe(time.Since(enqueuedAt).Seconds())
	}
}

// Attempt counts one attempt and its duration.
func (m *Metrics) Attempt(kind, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.Attempts.WithLabelValues(kind, result).Inc()
	m.AttemptDuration.WithLabelValues(kind).Observe(d.Seconds())
}

// Ledger observes one ledger round trip.
func (m *Metrics) Ledger(op string, start time.Time) {
	if m == nil {
		return
	}
	m.LedgerDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// Overrun counts a handler that ran past its timeout, and tracks it until it returns.
func (m *Metrics) Overrun(kind string) (done func()) {
	if m == nil {
		return func() {}
	}
	m.Overruns.WithLabelValues(kind).Inc()
	g := m.RunningOverdue.WithLabelValues(kind)
	g.Inc()
	return g.Dec
}
