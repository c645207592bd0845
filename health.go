package levee

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
)

// CheckStatus is the health of one check, or of the whole worker.
type CheckStatus string

// The health levels, best first. /readyz answers 200 for healthy and degraded, 503 for
// unhealthy.
const (
	Healthy   CheckStatus = "healthy"
	Degraded  CheckStatus = "degraded"
	Unhealthy CheckStatus = "unhealthy"
)

// Check is the outcome of one readiness check.
type Check struct {
	Status    CheckStatus `json:"status"`
	LatencyMS float64     `json:"latency_ms"`
	Message   string      `json:"message,omitempty"`
}

// Health is the worker's readiness: the worst of its checks. Its JSON form is /readyz's body.
type Health struct {
	Status CheckStatus      `json:"status"`
	Checks map[string]Check `json:"checks"`
}

// Thresholds of the readiness checks.
const (
	checkTimeout     = 2 * time.Second
	postgresSlow     = 500 * time.Millisecond
	dlqNearlyFull    = 0.8
	healthCheckNATS  = "nats"
	healthCheckPG    = "postgres"
	healthCheckDLQ   = "dlq"
	healthCheckStart = "worker"
)

// live holds what the checks need once Run has connected.
type live struct {
	q    *queue.Queue
	pool *pgxpool.Pool
	eng  *worker.Worker
}

func (w *Worker) setLive(l *live) {
	w.liveMu.Lock()
	defer w.liveMu.Unlock()
	w.live = l
}

func (w *Worker) getLive() *live {
	w.liveMu.Lock()
	defer w.liveMu.Unlock()
	return w.live
}

// Health runs the readiness checks, each with its own timeout, and returns their worst status:
// unhealthy when NATS or Postgres is unreachable (or the worker is not running), degraded when
// a breaker is open or half-open, Postgres is slow, or the DLQ is near its limits.
func (w *Worker) Health(ctx context.Context) Health {
	l := w.getLive()
	if l == nil {
		return Health{Status: Unhealthy, Checks: map[string]Check{
			healthCheckStart: {Status: Unhealthy, Message: "not running (starting, or stopped)"},
		}}
	}
	h := Health{Status: Healthy, Checks: map[string]Check{}}
	var mu sync.Mutex
	add := func(name string, c Check) {
		mu.Lock()
		defer mu.Unlock()
		h.Checks[name] = c
		if rank(c.Status) > rank(h.Status) {
			h.Status = c.Status
		}
	}
	timed := func(name string, fn func(context.Context) Check) {
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		defer cancel()
		start := time.Now()
		done := make(chan Check, 1)
		go func() { done <- fn(cctx) }()
		var c Check
		select {
		case c = <-done:
		case <-cctx.Done():
			c = Check{Status: Unhealthy, Message: fmt.Sprintf("no answer within %s", checkTimeout)}
		}
		c.LatencyMS = float64(time.Since(start).Microseconds()) / 1000
		add(name, c)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		timed(healthCheckNATS, func(ctx context.Context) Check {
			if !l.q.Connected() {
				return Check{Status: Unhealthy, Message: "disconnected; reconnecting"}
			}
			if err := l.q.CheckJetStream(ctx); err != nil {
				return Check{Status: Unhealthy, Message: err.Error()}
			}
			return Check{Status: Healthy, Message: "server " + l.q.ServerVersion()}
		})
	})
	wg.Go(func() {
		timed(healthCheckPG, func(ctx context.Context) Check {
			start := time.Now()
			if err := l.pool.Ping(ctx); err != nil {
				return Check{Status: Unhealthy, Message: "unreachable; pulling paused until it answers: " + err.Error()}
			}
			if d := time.Since(start); d > postgresSlow {
				return Check{Status: Degraded, Message: fmt.Sprintf("slow: ping took %s", d.Round(time.Millisecond))}
			}
			return Check{Status: Healthy}
		})
	})
	wg.Go(func() {
		timed(healthCheckDLQ, func(ctx context.Context) Check {
			msgs, _, used, err := l.q.DLQUsage(ctx)
			switch {
			case err != nil:
				return Check{Status: Unhealthy, Message: err.Error()}
			case used >= 1:
				return Check{Status: Unhealthy, Message: fmt.Sprintf("full (%d jobs): dead jobs stay in the work stream until it has room", msgs)}
			case used >= dlqNearlyFull:
				return Check{Status: Degraded, Message: fmt.Sprintf("%.0f%% of its limits used (%d jobs)", used*100, msgs)}
			}
			return Check{Status: Healthy, Message: fmt.Sprintf("%d jobs", msgs)}
		})
	})
	for kind, b := range l.eng.Breakers() {
		c := Check{Status: Healthy, Message: b.State.String()}
		switch b.State {
		case executor.BreakerOpen:
			c = Check{Status: Degraded, Message: fmt.Sprintf("open until %s: the kind is paused", b.OpenUntil.UTC().Format(time.RFC3339))}
		case executor.BreakerHalfOpen:
			c = Check{Status: Degraded, Message: "half-open: trial calls"}
		}
		add("breaker:"+kind, c)
	}
	wg.Wait()
	return h
}

func rank(s CheckStatus) int {
	switch s {
	case Degraded:
		return 1
	case Unhealthy:
		return 2
	}
	return 0
}

// Handler serves the worker's operations endpoints: GET /healthz (200 while the process can
// serve), GET /readyz (the Health JSON; 200 when healthy or degraded, 503 when unhealthy) and
// GET /metrics (Prometheus). Mount it before or after Run; /readyz says unhealthy until Run
// has connected.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		h := w.Health(r.Context())
		rw.Header().Set("Content-Type", "application/json")
		if h.Status == Unhealthy {
			rw.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(rw).Encode(h)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.metrics.Registry, promhttp.HandlerOpts{}))
	return mux
}
