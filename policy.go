package levee

import (
	"time"

	"github.com/levee-dev/levee/internal/executor"
)

// Policy is a kind's resilience policy. Every zero field takes its default.
type Policy struct {
	// MaxAttempts is the attempt budget per job (a job's own --max-attempts overrides it).
	// Default 5.
	MaxAttempts int
	// Timeout bounds each attempt. Default 30s.
	Timeout time.Duration
	// Backoff spaces retries: the delay before retry n is uniform in
	// [0, min(Max, Base·2^(n-1))). Defaults: Base 1s, Max 5m.
	Backoff Backoff
	// Concurrency is how many jobs of the kind one worker runs at once. Default 10.
	Concurrency int
	// AckWait is how long a job may run without a heartbeat before JetStream redelivers it
	// and its ledger lease ends; workers heartbeat every AckWait/3. Default 30s.
	AckWait time.Duration
	// MaxDeliveries is JetStream's delivery limit for the kind, a safety net for messages
	// that crash workers (attempts are counted in Postgres). Default 100; must exceed
	// MaxAttempts.
	MaxDeliveries int
	// FleetConcurrency bounds the kind's jobs in flight across all workers (the consumer's
	// MaxAckPending). Default 1000.
	FleetConcurrency int
	// Rate limits the kind across all workers serving it, e.g. Rate{Events: 50, Per:
	// time.Second}; each worker takes an equal share of it. The zero Rate means no limit.
	Rate Rate
	// Burst is the token bucket's size across the fleet. Default max(1, rate per second).
	Burst int
	// Breaker configures the kind's circuit breaker; zero fields take its defaults.
	Breaker BreakerPolicy
	// Fallback names a kind that takes over jobs whose attempts are exhausted, with the same
	// key and payload, instead of the DLQ. Permanent errors never fall back, and a fallback
	// job never falls back again. "" means none.
	Fallback string
	// FallbackAfter also hands waiting jobs to Fallback, without attempts, once the breaker
	// has stayed open this long. 0 means never.
	FallbackAfter time.Duration
}

// Rate is a number of events per period; see ParseRate.
type Rate = executor.Rate

// ParseRate reads a rate such as "50/s", "3000/m" or "10/h".
func ParseRate(s string) (Rate, error) { return executor.ParseRate(s) }

// BreakerPolicy configures a kind's circuit breaker. Only downstream failures count (5xx,
// timeouts, connection errors, plain handler errors), not 4xx, permanent errors or
// cancellations. While it is open the kind's workers stop pulling: the backlog waits in the
// stream and no attempt is spent.
type BreakerPolicy struct {
	// Window is the sliding window of outcomes. Default 30s.
	Window time.Duration
	// MinCalls is how many outcomes the window needs before the breaker may open. Default 20.
	MinCalls int
	// FailureRate opens the breaker when failures/calls reaches it. Default 0.5.
	FailureRate float64
	// OpenFor is how long it stays open before half-open. Default 30s.
	OpenFor time.Duration
	// HalfOpenCalls is how many trial calls half-open admits. Default 3.
	HalfOpenCalls int
}

// Backoff configures capped exponential backoff with full jitter.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

func (p Policy) executor() executor.Policy {
	return executor.Policy{
		MaxAttempts: p.MaxAttempts,
		Timeout:     p.Timeout,
		Backoff:     executor.Backoff{Base: p.Backoff.Base, Max: p.Backoff.Max},
		Concurrency: p.Concurrency,
		Rate:        p.Rate,
		Burst:       p.Burst,
		Breaker: executor.BreakerConfig{
			Window: p.Breaker.Window, MinCalls: p.Breaker.MinCalls, FailureRate: p.Breaker.FailureRate,
			OpenFor: p.Breaker.OpenFor, HalfOpenCalls: p.Breaker.HalfOpenCalls,
		},
	}
}
