package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/levee-dev/levee/leveetype"
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
	// MaxAhead bounds the messages of the kind a worker holds beyond Concurrency: pulled and
	// claimed ahead of a free slot, so that a fast handler does not wait for the round trips
	// of the next pull and claim (design rule 16). The depth used adapts, from 0 to MaxAhead,
	// to how fast the handlers return. Default 256.
	MaxAhead int
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
	p.MaxAhead = cmp.Or(p.MaxAhead, DefaultMaxAhead)
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

// PolicyOf is the executor's policy for a kind's public policy p, which must have its defaults
// filled in and be valid (leveetype.Policy.WithDefaults and Validate, the one check of a
// policy). It is the one conversion between the two (design rule 39).
func PolicyOf(p leveetype.Policy) Policy {
	return Policy{
		MaxAttempts: p.MaxAttempts,
		Timeout:     p.Timeout,
		Backoff:     Backoff{Base: p.Backoff.Base, Max: p.Backoff.Max},
		Concurrency: p.Concurrency,
		Rate:        p.Rate,
		Burst:       p.Burst,
		Breaker: BreakerConfig{
			Window: p.Breaker.Window, MinCalls: p.Breaker.MinCalls, FailureRate: p.Breaker.FailureRate,
			OpenFor: p.Breaker.OpenFor, HalfOpenCalls: p.Breaker.HalfOpenCalls, Scope: p.Breaker.Scope,
		},
	}
}

// DefaultMaxAhead is MaxAhead's default: four pulled groups of 64.
const DefaultMaxAhead = 256

// Pipeline applies one kind's policy to its attempts. It is safe for concurrent use and shared
// by all of a worker's goroutines for the kind.
type Pipeline struct {
	policy   Policy
	breaker  atomic.Pointer[breakerBox] // swapped once by UseBreaker, read concurrently
	limiter  *Limiter
	bulkhead *Bulkhead // handler calls in flight: Concurrency
	held     *Bulkhead // messages held: Concurrency plus the depth ahead
	tune     aheadTuner
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
// Admission happens before the pull, for as many messages as may be held now: a breaker
// permit, a place among the messages held and a rate token each. Places are reserved before
// tokens are counted (a reserved place costs nothing while no message is pulled), and tokens
// are taken only for the messages the pull returned, so a short pull wastes no rate. A
// message held takes its bulkhead slot only when its handler is about to be called
// (Acquire), so that the bulkhead bounds calls, and pulls and claims run ahead of it.
func NewPipeline(p Policy) (*Pipeline, error) {
	p = p.Defaults()
	bh, err := NewBulkhead(p.Concurrency)
	if err != nil {
		return nil, err
	}
	if p.MaxAhead < 1 {
		return nil, fmt.Errorf("max ahead must be at least 1, got %d", p.MaxAhead)
	}
	held, err := NewBulkhead(p.Concurrency)
	if err != nil {
		return nil, err
	}
	br := NewBreaker(p.Breaker)
	pl := &Pipeline{policy: p, bulkhead: bh, held: held, limiter: NewLimiter(p.Rate, p.Burst, p.Clock)}
	pl.tune.since = p.Clock.Now()
	pl.UseBreaker(br)
	return pl, nil
}

// breakerBox holds a CircuitBreaker of any type in an atomic.Pointer.
type breakerBox struct{ CircuitBreaker }

// Policy returns the effective policy.
func (p *Pipeline) Policy() Policy { return p.policy }

// Breaker returns the kind's circuit breaker.
func (p *Pipeline) Breaker() CircuitBreaker { return p.breaker.Load().CircuitBreaker }

// UseBreaker replaces the kind's breaker with b (a FleetBreaker), before any attempt is
// admitted; status readers may call Breaker meanwhile.
func (p *Pipeline) UseBreaker(b CircuitBreaker) { p.breaker.Store(&breakerBox{b}) }

// Limiter returns the kind's rate limiter (this worker's share).
func (p *Pipeline) Limiter() *Limiter { return p.limiter }

// Admit waits until at least one more message may be held and reserves up to max: a breaker
// permit, a place among the messages held, and a rate token's availability each. Pull
// exactly that many messages, then call Pulled. It is AdmitTrial for callers that know the
// breaker is closed (tests).
func (p *Pipeline) Admit(ctx context.Context, max int) (int, error) {
	n, _, err := p.AdmitTrial(ctx, max)
	return n, err
}

// AdmitTrial is Admit that also tells whether the breaker permits are trials (given while the
// breaker was half-open). Pass it on to Pulled, Release, Putback and Finish of those
// reservations: a permit given while closed means nothing to a breaker that has opened since,
// so it neither settles nor frees a trial.
func (p *Pipeline) AdmitTrial(ctx context.Context, max int) (int, bool, error) {
	for {
		n, trial, err := p.admit(ctx, max)
		if err != nil || n == 0 {
			return n, trial, err
		}
		// The breaker may have changed while we waited for places or tokens: permits it gave
		// while closed are stale once it is not, and trials once it opened again.
		if st := p.Breaker().State(); (!trial && st != BreakerClosed) || (trial && st == BreakerOpen) {
			p.Release(n, trial)
			continue
		}
		return n, trial, nil
	}
}

func (p *Pipeline) admit(ctx context.Context, max int) (int, bool, error) {
	p.retune(0)
	n, trial, err := p.Breaker().AdmitTrial(ctx, max)
	if err != nil {
		return 0, false, err
	}
	slots, err := p.held.Acquire(ctx, n)
	if err != nil {
		p.releasePermits(n, trial)
		return 0, false, err
	}
	p.releasePermits(n-slots, trial)
	tokens, err := p.limiter.Available(ctx, slots)
	if err != nil {
		p.held.Release(slots)
		p.releasePermits(slots, trial)
		return 0, false, err
	}
	p.Release(slots-tokens, trial)
	return tokens, trial, nil
}

// releasePermits gives n breaker permits back unused. Only trials are the breaker's concern:
// it counts no permit given while closed.
func (p *Pipeline) releasePermits(n int, trial bool) {
	if trial && n > 0 {
		p.Breaker().Release(n)
	}
}

// Pulled settles an admission of admitted reservations of which the pull used got: it takes
// got rate tokens and gives back the rest.
func (p *Pipeline) Pulled(admitted, got int, trial bool) {
	p.limiter.Take(got)
	p.Release(admitted-got, trial)
}

// Release gives back n reservations that made no call (a duplicate, a busy key, a malformed
// message, a message handed back at shutdown) and took no bulkhead slot.
func (p *Pipeline) Release(n int, trial bool) {
	p.held.Release(n)
	p.releasePermits(n, trial)
}

// Acquire waits for the bulkhead slot of one admitted message whose handler is about to be
// called. Finish gives it back with the reservation; if Acquire fails (ctx ended), Release
// gives back the reservation.
func (p *Pipeline) Acquire(ctx context.Context) error {
	_, err := p.bulkhead.Acquire(ctx, 1)
	return err
}

// TryAcquire takes the bulkhead slot of one admitted message if one is free now.
func (p *Pipeline) TryAcquire() bool { return p.bulkhead.TryAcquire(1) == 1 }

// Putback gives back the reservation of one admitted message that made no call after all: its
// place among those held, its bulkhead slot if it took one (slot), and its breaker permit. It
// is no handler return for the depth ahead.
func (p *Pipeline) Putback(slot, trial bool) {
	if slot {
		p.bulkhead.Release(1)
	}
	p.Release(1, trial)
}

// Finish settles the reservation of an attempt that ran, telling the breaker whether the
// downstream failed. Only downstream signals count as failures (timeouts, connection
// errors, 5xx, and handler errors that carry no 4xx StatusError); successes and permanent
// errors count as calls that succeeded; abandoned attempts and rejections made before any
// call (url_not_allowed, invalid_payload) do not count. A call on a permit given while closed
// that ends while the breaker is half-open is old news to it: it settles no trial.
func (p *Pipeline) Finish(v Verdict, trial bool) {
	defer func() {
		p.bulkhead.Release(1)
		p.held.Release(1)
		p.retune(1) // also while the pull loop waits for a place (slow calls hold them all)
	}()
	switch {
	case v.Class == Abandoned, v.Class == Dead && v.Reason != ReasonPermanent:
		p.releasePermits(1, trial)
	case !trial && p.Breaker().State() == BreakerHalfOpen:
	default:
		p.Breaker().Record(DownstreamFailure(v))
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

// InFlight returns the number of bulkhead slots held: handler calls in flight.
func (p *Pipeline) InFlight() int { return p.bulkhead.InUse() }

// Held returns the number of messages admitted and not yet finished or released.
func (p *Pipeline) Held() int { return p.held.InUse() }

// Ahead returns how many messages the kind may hold beyond its concurrency now.
func (p *Pipeline) Ahead() int {
	p.tune.mu.Lock()
	defer p.tune.mu.Unlock()
	return p.tune.ahead
}

// How the depth ahead is tuned: every aheadWindow, to the number of handler returns expected
// in aheadLead at the rate of the last window (rounded down, at most MaxAhead). aheadLead
// covers a pull and a claim round trip twice over, so that a slot that frees finds a claimed
// message waiting, and a message held ahead waits about that long for its slot (shown running
// meanwhile): a kind whose handlers return fewer than one per aheadLead (concurrency 10 of
// 200 ms or more) holds nothing ahead, as before. A window with no return keeps the depth
// when no handler runs (the kind is idle, not slow), and sets it to 0 when handlers run (they
// are slow, or ignore their timeout). Fast handlers raise the depth within a few windows:
// what is held bounds the rate measured, and each window multiplies it; a window closes
// early once all that may be held has returned (aheadMinWindow).
const (
	aheadWindow = 100 * time.Millisecond
	aheadLead   = 20 * time.Millisecond
	// aheadMinWindow: a window closes early, from aheadMinWindow on, once as many handlers
	// returned as may be held, so that fast handlers raise the depth within tens of
	// milliseconds of a start or a burst, not hundreds.
	aheadMinWindow = 10 * time.Millisecond
)

type aheadTuner struct {
	mu       sync.Mutex
	ahead    int       // the depth in use
	finished int       // handler returns since since
	since    time.Time // start of the window
}

// retune counts returned handler returns (Finish: 1, admission: 0) and sets the depth ahead
// from the last window, once a window has passed.
func (p *Pipeline) retune(returned int) {
	t := &p.tune
	now := p.policy.Clock.Now()
	t.mu.Lock()
	t.finished += returned
	elapsed := now.Sub(t.since)
	if elapsed < aheadWindow && (elapsed < aheadMinWindow || t.finished < p.policy.Concurrency+t.ahead) {
		t.mu.Unlock()
		return
	}
	n := t.finished
	t.finished, t.since = 0, now
	if n == 0 && p.bulkhead.InUse() == 0 {
		t.mu.Unlock()
		return
	}
	// No return while handlers run: they take longer than a window (or ignore their timeout),
	// so nothing is held ahead of them.
	ahead := min(int(float64(n)*float64(aheadLead)/float64(elapsed)), p.policy.MaxAhead)
	if ahead != t.ahead {
		t.ahead = ahead
		p.held.Resize(p.policy.Concurrency + ahead)
	}
	t.mu.Unlock()
}

// Execute runs one admitted attempt under the attempt timeout and classifies its outcome.
// onOverrun, if set, is called if the handler is still running OverrunGrace past its timeout.
// The caller commits the outcome, then calls Finish.
func Execute[T any](ctx context.Context, p *Pipeline, onOverrun func(), fn func(context.Context) (T, error)) (T, Verdict) {
	return runWithTimeout(ctx, p.policy.Timeout, p.policy.OverrunGrace, func() {
		if onOverrun != nil {
			onOverrun()
		}
	}, fn)
}
