// Package every owns Levee's one periodic loop: run a function every interval until the
// context ends or the function says to stop. The worker's background loops (sweep, reap,
// plans, samples, fallback hand-over, last-chance heartbeats, the fleet registry's refresh,
// the shutdown's wait) and the CLI's polls (status --wait, stats --watch, breaker reset
// --wait) are each one call of Do or DoOrWake.
package every

import (
	"context"
	"time"
)

// Do calls fn every d until ctx ends or fn returns false. With now set, the first call is
// made at once instead of after d. fn runs on the caller's goroutine, so a slow call delays
// the next tick (ticks are not queued up).
func Do(ctx context.Context, d time.Duration, now bool, fn func(context.Context) bool) {
	DoOrWake(ctx, d, now, nil, fn)
}

// DoOrWake is Do that also calls fn at once each time wake receives (a nil wake never does).
func DoOrWake(ctx context.Context, d time.Duration, now bool, wake <-chan struct{}, fn func(context.Context) bool) {
	if now && (ctx.Err() != nil || !fn(ctx)) {
		return
	}
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		if ctx.Err() != nil || !fn(ctx) {
			return
		}
	}
}
