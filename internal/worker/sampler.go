package worker

import (
	"context"
	"time"

	"github.com/levee-dev/levee/internal/every"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/metrics"
)

// sampleEvery is how often gauges are sampled; the DLQ depth, which reads the DLQ stream (in
// one worker of the fleet: dlq_count.go), is sampled every dlqSampleEvery.
const (
	sampleEvery    = 5 * time.Second
	dlqSampleEvery = 30 * time.Second
)

// sampleLoop keeps the gauge metrics current: in-flight attempts, bulkhead saturation, the
// breaker (state, failure rate and calls in the window, next trial, cut off from the fleet),
// rate-limiter wait, backlog, and (in the fleet's leader) DLQ depth by reason.
func (w *Worker) sampleLoop(ctx context.Context) {
	m := w.cfg.Metrics
	if m == nil {
		return
	}
	waited := make([]time.Duration, len(w.kinds))
	var lastDLQ time.Time
	dlq, exported := newDLQCounter(w.cfg.Queue), map[string]bool{}
	every.Do(ctx, sampleEvery, true, func(ctx context.Context) bool {
		for i, k := range w.kinds {
			name := k.kind.Name
			inUse := k.pipeline.InFlight()
			m.InFlight.WithLabelValues(name).Set(float64(inUse))
			m.HeldAhead.WithLabelValues(name).Set(float64(max(k.pipeline.Held()-inUse, 0)))
			m.BulkheadUse.WithLabelValues(name).Set(float64(inUse) / float64(k.pipeline.Policy().Concurrency))
			sampleBreaker(m, name, time.Now(), k.pipeline.Breaker().Snapshot())
			now := k.pipeline.Limiter().Waited()
			m.RateWait.WithLabelValues(name).Add((now - waited[i]).Seconds())
			waited[i] = now
			if waiting, _, err := k.puller.Pending(ctx); err == nil {
				m.Backlog.WithLabelValues(name).Set(float64(waiting))
			}
		}
		if time.Since(lastDLQ) >= dlqSampleEvery {
			lastDLQ = time.Now()
			w.sampleDLQDepth(ctx, m, dlq, exported)
		}
		return true
	})
}

// sampleBreaker sets the breaker gauges of kind from its snapshot at now.
func sampleBreaker(m *metrics.Metrics, kind string, now time.Time, snap executor.BreakerSnapshot) {
	m.BreakerState.WithLabelValues(kind).Set(breakerGauge(snap.State))
	m.BreakerFailureRate.WithLabelValues(kind).Set(snap.FailureRate())
	m.BreakerWindowCalls.WithLabelValues(kind).Set(float64(snap.Calls))
	next := 0.0
	if snap.State == executor.BreakerOpen {
		next = max(snap.OpenUntil.Sub(now), 0).Seconds()
	}
	m.BreakerNextTrial.WithLabelValues(kind).Set(next)
	cutOff := 0.0
	if snap.CutOff {
		cutOff = 1
	}
	m.BreakerCutOff.WithLabelValues(kind).Set(cutOff)
}

func breakerGauge(s executor.BreakerState) float64 {
	switch s {
	case executor.BreakerHalfOpen:
		return 1
	case executor.BreakerOpen:
		return 2
	}
	return 0
}
