package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
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
	// Rate is the kind's fleet-wide rate limit; the zero Rate means none. Each worker takes
	// its share (SetShare).
	Rate Rate
	// Burst is the token bucket's size across the fleet. Default max(1, rate per second).
	Burst int
	// Breaker configures the kind's circuit breaker; zero fields take its defaults.
	Breaker BreakerConfig
	// Clock drives the breaker and the limiter. Default SystemClock.
	Clock Clock
}

// Defaults returns p with every zero field set to its default.
func (p Policy) Defaults() Policy {
	p.MaxAttempts = cmp.Or(p.MaxAttempts, 5)
	p.Timeout = cmp.Or(p.Timeout, 30*time.Second)
	p.Backoff.Base = cmp.Or(p.Backoff.Base, DefaultBackoff.Base)
	p.Backoff.Max = cmp.Or(p.Backoff.Max, DefaultBackoff.Max)
	p.Concurrency = cmp.Or(p.Concurrency, 10)
	p.OverrunGrace = cmp.Or(p.OverrunGrace, 5*time.Second)
	if p.Clock == nil {
		p.Clock = SystemClock
	}
	if p.Breaker.Clock == nil {
		p.Breaker.Clock = p.Clock
	}
	p.Breaker = p.Breaker.Defaults()
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
	case p.Burst < 0:
		return fmt.Errorf("burst must not be negative, got %d", p.Burst)
	}
	return p.Breaker.Validate()
}

// Pipeline applies one kind's policy to its attempts. It is safe for concurrent use and shared
// by all of a worker's goroutines for the kind.
type Pipeline struct {
	policy   Policy
	breaker  *Breaker
	limiter  *Limiter
	bulkhead *Bulkhead
	overruns atomic.Int64
}

// NewPipeline composes the policies of one kind, outer to inner (design rule 16):
//
//	durable retry (redelivery with NakWithDelay; outside this package, delays from Backoff)
//	└─ circuit breaker: Admit waits while open; half-open hands out trial permits
//	   └─ rate limiter (this worker's share of the fleet-wide rate): tokens
//	      └─ bulkhead slots (per worker; fleet-wide via the consumer's MaxAckPending)
//	         └─ per-attempt timeout (context cause ErrAttemptTimeout; overruns reported)
//	            └─ handler
//	outcome: Classify → succeeded | retry | dead(reason); Finish tells the breaker
//
// Admission happens before the pull, for as many messages as may start now: a breaker
// permit, a bulkhead slot and a rate token each. Slots are reserved before tokens are counted
// (a reserved slot costs nothing while no message is pulled), and tokens are taken only for
// the messages the pull returned, so a short pull wastes no rate.
func NewPipeline(p Policy) (*Pipeline, error) {
	p = p.Defaults()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	bh, err := NewBulkhead(p.Concurrency)
	if err != nil {
		return nil, err
	}
	br, err := NewBreaker(p.Breaker)
	if err != nil {
		return nil, err
	}
	return &Pipeline{policy: p, bulkhead: bh, breaker: br, limiter: NewLimiter(p.Rate, p.Burst, p.Clock)}, nil
}

// Policy returns the effective policy.
func (p *Pipeline) Policy() Policy { return p.policy }

// Breaker returns the kind's circuit breaker.
func (p *Pipeline) Breaker() *Breaker { return p.breaker }

// Limiter returns the kind's rate limiter (this worker's share).
func (p *Pipeline) Limiter() *Limiter { return p.limiter }

// Admit waits until at least one attempt may start and reserves up to max: a breaker permit,
// a bulkhead slot, and a rate token's availability each. Pull exactly that many messages,
// then call Pulled.
func (p *Pipeline) Admit(ctx context.Context, max int) (int, error) {
	for {
		n, err := p.admit(ctx, max)
		if err != nil || n == 0 {
			return n, err
		}
		// The breaker may have opened while we waited for slots or tokens: pull nothing on
		// permits it gave before.
		if p.breaker.State() != BreakerOpen {
			return n, nil
		}
		p.Release(n)
	}
}

func (p *Pipeline) admit(ctx context.Context, max int) (int, error) {
	n, err := p.breaker.Admit(ctx, max)
	if err != nil {
		return 0, err
	}
	slots, err := p.bulkhead.Acquire(ctx, n)
	if err != nil {
		p.breaker.Release(n)
		return 0, err
	}
	p.breaker.Release(n - slots)
	tokens, err := p.limiter.Available(ctx, slots)
	if err != nil {
		p.bulkhead.Release(slots)
		p.breaker.Release(slots)
		return 0, err
	}
	p.bulkhead.Release(slots - tokens)
	p.breaker.Release(slots - tokens)
	return tokens, nil
}

// Pulled settles an admission of admitted reservations of which the pull used got: it takes
// got rate tokens and gives back the rest.
func (p *Pipeline) Pulled(admitted, got int) {
	p.limiter.Take(got)
	p.Release(admitted - got)
}

// Release gives back n reservations that made no call (a duplicate, a busy key, a malformed
// message, a message handed back at shutdown).
func (p *Pipeline) Release(n int) {
	p.bulkhead.Release(n)
	p.breaker.Release(n)
}

// Finish settles the reservation of an attempt that ran, telling the breaker whether the
// downstream failed. Only downstream signals count as failures (timeouts, connection
// errors, 5xx, and handler errors that carry no 4xx StatusError); successes and permanent
// errors count as calls that succeeded; abandoned attempts and rejections made before any
// call (url_not_allowed, invalid_payload) do not count.
func (p *Pipeline) Finish(v Verdict) {
	defer p.bulkhead.Release(1)
	switch {
	case v.Class == Abandoned, v.Class == Dead && v.Reason != ReasonPermanent:
		p.breaker.Release(1)
	default:
		p.breaker.Record(DownstreamFailure(v))
	}
}

// DownstreamFailure reports whether v is a signal that the downstream is failing.
func DownstreamFailure(v Verdict) bool {
	if v.Class != Retry {
		return false
	}
	var se *StatusError
	if errors.As(v.Err, &se) && se.Code >= 400 && se.Code < 500 {
		return false // 408, 425, 429: retried, but the downstream answered
	}
	return true
}

// InFlight returns the number of bulkhead slots held.
func (p *Pipeline) InFlight() int { return p.bulkhead.InUse() }

// Overruns counts attempts whose handler ran past its timeout plus OverrunGrace.
func (p *Pipeline) Overruns() int64 { return p.overruns.Load() }

// Execute runs one admitted attempt under the attempt timeout and classifies its outcome.
// onOverrun is called if the handler is still running OverrunGrace past its timeout (the
// pipeline counts it too). The caller commits the outcome, then calls Finish.
func Execute[T any](ctx context.Context, p *Pipeline, onOverrun func(), fn func(context.Context) (T, error)) (T, Verdict) {
	return runWithTimeout(ctx, p.policy.Timeout, p.policy.OverrunGrace, func() {
		p.overruns.Add(1)
		if onOverrun != nil {
			onOverrun()
		}
	}, fn)
}
