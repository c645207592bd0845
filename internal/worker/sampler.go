package worker

import (
	"context"
	"time"

	"github.com/levee-dev/levee/internal/executor"
)

// sampleEvery is how often gauges are sampled; the DLQ depth, which reads the DLQ stream (in
// one worker of the fleet: dlq_count.go), is sampled every dlqSampleEvery.
const (
	sampleEvery    = 5 * time.Second
	dlqSampleEvery = 30 * time.Second
)

// sampleLoop keeps the gauge metrics current: in-flight attempts, bulkhead saturation, breaker
// state, rate-limiter wait, backlog, and (in the fleet's leader) DLQ depth by reason.
func (w *Worker) sampleLoop(ctx context.Context) {
	m := w.cfg.Metrics
	if m == nil {
		return
	}
	waited := make([]time.Duration, len(w.kinds))
	var lastDLQ time.Time
	dlq, exported := newDLQCounter(w.cfg.Queue), map[string]bool{}
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		for i, k := range w.kinds {
			name := k.kind.Name
			inUse := k.pipeline.InFlight()
			m.InFlight.WithLabelValues(name).Set(float64(inUse))
			m.BulkheadUse.WithLabelValues(name).Set(float64(inUse) / float64(k.pipeline.Policy().Concurrency))
			m.BreakerState.WithLabelValues(name).Set(breakerGauge(k.pipeline.Breaker().State()))
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
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
