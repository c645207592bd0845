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
// a breaker is open or half-open, Postgres is slow, or the DLQ is near its limits. A kind's
// check breaker:<kind> says the breaker's state (the fleet's, for a breaker shared by the
// fleet, as this worker sees it), the failures in its window, when the next trial is due, and
// whether this worker is cut off from the fleet's record.
func (w *Worker) Health(ctx context.Context) Health {
	l := w.getLive()
	if l == nil || !l.eng.Serving() {
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
				return w.failed(healthCheckNATS, "JetStream does not answer", err)
			}
			return Check{Status: Healthy, Message: "server " + l.q.ServerVersion()}
		})
	})
	wg.Go(func() {
		timed(healthCheckPG, func(ctx context.Context) Check {
			start := time.Now()
			if err := l.pool.Ping(ctx); err != nil {
				return w.failed(healthCheckPG, "unreachable; pulling paused until it answers", err)
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
				return w.failed(healthCheckDLQ, "its usage cannot be read", err)
			case used >= 1:
				return Check{Status: Unhealthy, Message: fmt.Sprintf("full (%d jobs): dead jobs stay in the work stream until it has room", msgs)}
			case used >= dlqNearlyFull:
				return Check{Status: Degraded, Message: fmt.Sprintf("%.0f%% of its limits used (%d jobs)", used*100, msgs)}
			}
			return Check{Status: Healthy, Message: fmt.Sprintf("%d jobs", msgs)}
		})
	})
	now := time.Now()
	for kind, b := range l.eng.Breakers() {
		add("breaker:"+kind, breakerCheck(now, b))
	}
	wg.Wait()
	return h
}

// breakerCheck is the check of a kind's circuit breaker, as this worker sees it at now:
// degraded while open or half-open (the kind is paused, or only trial calls run), never
// unhealthy. Its message names the state (the fleet's, for a shared breaker), the failures in
// the window, when the next trial is due, and whether this worker is cut off from the fleet's
// record and decides alone.
func breakerCheck(now time.Time, b executor.BreakerSnapshot) Check {
	whose := "this worker's"
	if b.Fleet {
		whose = "the fleet's"
	}
	window := fmt.Sprintf("no calls in %s window", whose)
	if b.Calls > 0 {
		window = fmt.Sprintf("%d of %d calls failed (%.0f%%) in %s window", b.Failures, b.Calls,
			b.FailureRate()*100, whose)
	}
	c := Check{Status: Healthy, Message: "closed: " + window}
	switch b.State {
	case executor.BreakerOpen:
		next := max(b.OpenUntil.Sub(now), 0)
		if next < time.Minute {
			next = next.Truncate(100 * time.Millisecond)
		} else {
			next = next.Truncate(time.Second)
		}
		c = Check{Status: Degraded, Message: fmt.Sprintf("open until %s (next trial in %s): the kind is paused; %s",
			b.OpenUntil.UTC().Format(time.RFC3339), next, window)}
	case executor.BreakerHalfOpen:
		trials := "trial calls due now"
		if b.Fleet {
			trials = fmt.Sprintf("trial calls due now (%d out, %d succeeded)", b.Trials, b.TrialsOK)
		}
		c = Check{Status: Degraded, Message: fmt.Sprintf("half-open: %s; %s", trials, window)}
	}
	if b.Fleet {
		c.Message = "fleet breaker " + c.Message
	}
	if b.CutOff {
		c.Message += "; this worker is cut off from the fleet's breaker record and decides alone from its own outcomes"
	}
	return c
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

// failed is an unhealthy check whose error goes to the log, not into the check: /readyz
// answers anyone who reaches the listener, and a connection error names hosts, users and
// databases.
func (w *Worker) failed(check, what string, err error) Check {
	w.cfg.Logger.Warn("readiness check failed", "check", check, "err", err)
	return Check{Status: Unhealthy, Message: what + " (the worker's log has the error)"}
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
