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
	}
}
