package executor

import (
	"time"
)

// Backoff is capped exponential backoff with full jitter: the delay before retry n (n >= 1) is
// uniform in [0, min(Max, Base·2^(n-1))). The zero value is not useful; see DefaultBackoff.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// DefaultBackoff is used where a kind sets none: base 1s, max 5m.
var DefaultBackoff = Backoff{Base: time.Second, Max: 5 * time.Minute}

// Ceiling is the upper bound of the delay before retry n, before jitter.
func (b Backoff) Ceiling(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	ceiling := b.Base
	for i := 1; i < n && ceiling < b.Max; i++ {
		if ceiling > b.Max/2 {
			return b.Max // doubling would pass Max (or overflow)
		}
		ceiling *= 2
	}
	return min(ceiling, b.Max)
}

// Delay is the delay before retry n given a uniform random r in [0, 1). It is a pure function,
// so tests pass r.
func (b Backoff) Delay(n int, r float64) time.Duration {
	return time.Duration(r * float64(b.Ceiling(n)))
}

// RetryDelay is the delay before retrying after attempt n ended with v: the handler's
// RetryAfter when it gave one (capped at maxRetryAfter), else the backoff's draw with r.
func (b Backoff) RetryDelay(n int, v Verdict, r float64) time.Duration {
	if v.RetryAfter > 0 {
		return min(v.RetryAfter, maxRetryAfter)
	}
	return b.Delay(n, r)
}

// maxRetryAfter bounds a Retry-After a downstream may impose.
const maxRetryAfter = 24 * time.Hour
