package executor

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/levee-dev/levee/leveetype"
	"golang.org/x/time/rate"
)

// Rate is a kind's fleet-wide rate limit: Events per Per across all workers of the kind
// (design rule 19). The zero Rate means no limit (leveetype.Policy.Validate refuses a Rate with
// only one of the two set, or a negative one).
type Rate = leveetype.Rate

// tokenSlack absorbs float rounding in the bucket's arithmetic, so that a wait computed to
// refill exactly one token does find one when it ends.
const tokenSlack = 1e-9

// Limiter is one worker's token bucket for one kind, wrapping x/time/rate. It is used around
// the pull, before the bulkhead: Available waits until a token is there and says how many
// messages may be pulled; after the pull, Take spends one token per message received. Only
// one goroutine pulls per kind, so what Available promised is still there at Take.
//
// The fleet-wide rate is shared by SetShare: each of n workers gets rate/n and burst/n. See
// fleet.Member for how n is counted and how accurate the sum is.
//
// A Limiter is safe for concurrent use. Build one with NewLimiter; the zero value is not
// usable.
type Limiter struct {
	rate  Rate
	burst int // fleet-wide burst; this worker's is burst/members
	clock Clock
	lim   *rate.Limiter // nil: no limit

	mu      sync.Mutex
	members int
	changed chan struct{} // closed and replaced by SetShare, to wake a waiting Available

	waited atomic.Int64 // nanoseconds
}

// NewLimiter returns a limiter of r with bucket size burst, as if it were the only worker of
// its kind (call SetShare when the fleet is known). A burst of 0 means the default: one
// second's worth of events, at least 1. A nil clock means SystemClock. A zero r gives a
// limiter that never waits.
func NewLimiter(r Rate, burst int, clock Clock) *Limiter {
	if clock == nil {
		clock = SystemClock
	}
	l := &Limiter{rate: r, clock: clock, members: 1, changed: make(chan struct{})}
	if r.IsZero() {
		return l
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(r.PerSecond())))
	}
	l.burst = burst
	l.lim = rate.NewLimiter(rate.Limit(r.PerSecond()), burst)
	return l
}

// Rate returns the fleet-wide rate the limiter was built with.
func (l *Limiter) Rate() Rate { return l.rate }

// SetShare makes this worker's share of the rate and of the burst 1/members of the fleet's
// (members below 1 count as 1; the burst share is at least 1). Tokens already in the bucket
// stay, up to the new burst. It wakes a waiting Available.
func (l *Limiter) SetShare(members int) {
	members = max(1, members)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lim == nil || members == l.members {
		return
	}
	l.members = members
	now := l.clock.Now()
	l.lim.SetLimitAt(now, rate.Limit(l.rate.PerSecond()/float64(members)))
	l.lim.SetBurstAt(now, max(1, l.burst/members))
	close(l.changed)
	l.changed = make(chan struct{})
}

// Share returns this worker's current rate in events per second; 0 means no limit.
func (l *Limiter) Share() float64 {
	if l.lim == nil {
		return 0
	}
	return float64(l.lim.Limit())
}

// Available waits until at least one token is in the bucket, then returns how many messages
// may be pulled now: floor(tokens), at most upTo. It takes nothing; call Take with the number
// actually pulled. It returns ctx's error if ctx ends first, and 0 at once if upTo < 1. A
// limiter of no limit returns upTo at once.
func (l *Limiter) Available(ctx context.Context, upTo int) (int, error) {
	if upTo < 1 {
		return 0, nil
	}
	if l.lim == nil {
		return upTo, nil
	}
	var start time.Time
	for {
		now := l.clock.Now()
		n, wait, changed := l.available(now, upTo)
		if n > 0 {
			if !start.IsZero() {
				l.waited.Add(int64(now.Sub(start)))
			}
			return n, nil
		}
		if start.IsZero() {
			start = now
		}
		if err := l.sleep(ctx, wait, changed); err != nil {
			l.waited.Add(int64(l.clock.Now().Sub(start)))
			return 0, err
		}
	}
}

// available is the arithmetic of Available at now: how many tokens may be used (up to upTo)
// or, if none, how long until one is there; and the channel that SetShare closes.
func (l *Limiter) available(now time.Time, upTo int) (n int, wait time.Duration, changed <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	tokens := l.lim.TokensAt(now)
	if whole := math.Floor(tokens + tokenSlack); whole >= 1 {
		return int(min(whole, float64(upTo))), 0, l.changed
	}
	perSec := float64(l.lim.Limit())
	wait = time.Duration(math.Ceil((1 - tokens) / perSec * float64(time.Second)))
	return 0, max(wait, 1), l.changed
}

// sleep waits for d on the clock, for changed to close, or for ctx to end.
func (l *Limiter) sleep(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t := l.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-changed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Take spends n tokens now, one per message pulled after Available. Taking more than the
// bucket holds (the share shrank in between) leaves it in debt, which later waits repay.
func (l *Limiter) Take(n int) {
	if l.lim == nil || n < 1 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	burst := l.lim.Burst()
	for n > 0 {
		// ReserveN refuses more than the burst at once, so take in chunks of at most burst.
		chunk := min(n, burst)
		l.lim.ReserveN(now, chunk)
		n -= chunk
	}
}

// Waited returns the total time Available has spent waiting for tokens (on the limiter's
// clock), for the rate-limiter wait metric.
func (l *Limiter) Waited() time.Duration { return time.Duration(l.waited.Load()) }
