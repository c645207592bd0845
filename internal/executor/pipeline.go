package executor

import (
	"cmp"
	"context"
	"fmt"
	"time"
)

// Policy is a kind's resilience policy. Zero fields take the defaults given.
type Policy struct {
	// MaxAttempts is the attempt budget per job, counted in the ledger. Default 5.
	MaxAttempts int
	// Timeout bounds each attempt. Default 30s.
	Timeout time.Duration
	// Backoff spaces retries. Default DefaultBackoff (1s base, 5m max).
	Backoff Backoff
	// Concurrency is the number of attempts of the kind one worker runs at once (its
	// bulkhead). Default 10.
	Concurrency int
	// OverrunGrace is how long past its timeout a handler may run before it is reported as
	// ignoring its context. Default 5s.
	OverrunGrace time.Duration
}

// Defaults returns p with every zero field set to its default.
func (p Policy) Defaults() Policy {
	p.MaxAttempts = cmp.Or(p.MaxAttempts, 5)
	p.Timeout = cmp.Or(p.Timeout, 30*time.Second)
	p.Backoff.Base = cmp.Or(p.Backoff.Base, DefaultBackoff.Base)
	p.Backoff.Max = cmp.Or(p.Backoff.Max, DefaultBackoff.Max)
	p.Concurrency = cmp.Or(p.Concurrency, 10)
	p.OverrunGrace = cmp.Or(p.OverrunGrace, 5*time.Second)
	return p
}

// Validate reports the first impossible value, naming its field.
func (p Policy) Validate() error {
	switch {
	case p.MaxAttempts < 1:
		return fmt.Errorf("max_attempts must be at least 1, got %d", p.MaxAttempts)
	case p.Timeout <= 0:
		return fmt.Errorf("timeout must be positive, got %s", p.Timeout)
	case p.Backoff.Base <= 0:
		return fmt.Errorf("backoff.base must be positive, got %s", p.Backoff.Base)
	case p.Backoff.Max < p.Backoff.Base:
		return fmt.Errorf("backoff.max (%s) must not be below backoff.base (%s)", p.Backoff.Max, p.Backoff.Base)
	case p.Concurrency < 1:
		return fmt.Errorf("concurrency must be at least 1, got %d", p.Concurrency)
	case p.OverrunGrace < 0:
		return fmt.Errorf("overrun grace must not be negative, got %s", p.OverrunGrace)
	}
	return nil
}

// Pipeline applies one kind's policy to its attempts. It is safe for concurrent use and shared
// by all of a worker's goroutines for the kind.
type Pipeline struct {
	policy   Policy
	bulkhead *Bulkhead
}

// NewPipeline composes the policies of one kind, outer to inner (DESIGN rule 16):
//
//	durable retry (redelivery, NakWithDelay; outside this package)
//	└─ admission, before the pull: Admit
//	   └─ bulkhead slot (per worker; fleet-wide via the consumer's MaxAckPending)
//	      └─ attempt: Execute
//	         └─ per-attempt timeout (context cause ErrAttemptTimeout; overrun reported)
//	            └─ handler
//	└─ outcome: Classify → succeeded | retry after Backoff/RetryAfter | dead(reason)
//
// The circuit breaker (between retry and admission) and the fleet-wide rate limiter (before
// the bulkhead) join here; each is one file with its own errors.
func NewPipeline(p Policy) (*Pipeline, error) {
	p = p.Defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	bh, err := NewBulkhead(p.Concurrency)
	if err != nil {
		return nil, err
	}
	return &Pipeline{policy: p, bulkhead: bh}, nil
}

// Policy returns the effective policy.
func (p *Pipeline) Policy() Policy { return p.policy }

// Admit waits until at least one attempt may start and reserves up to max; it returns how many
// it reserved. Pull exactly that many messages, then Release what was not used.
func (p *Pipeline) Admit(ctx context.Context, max int) (int, error) {
	return p.bulkhead.Acquire(ctx, max)
}

// Release returns n reservations made by Admit.
func (p *Pipeline) Release(n int) { p.bulkhead.Release(n) }

// InFlight returns the number of reservations held.
func (p *Pipeline) InFlight() int { return p.bulkhead.InUse() }

// Execute runs one admitted attempt under the attempt timeout and classifies its outcome.
// onOverrun is called if the handler is still running OverrunGrace past its timeout. The
// caller releases the reservation after committing the outcome.
func Execute[T any](ctx context.Context, p *Pipeline, onOverrun func(), fn func(context.Context) (T, error)) (T, Verdict) {
	return runWithTimeout(ctx, p.policy.Timeout, p.policy.OverrunGrace, onOverrun, fn)
}
