package executor

import (
	"context"
	"time"
)

// Clock tells time and makes timers. Policies take one so that their tests run on a fake
// clock, never on sleeps. SystemClock is the real one.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a one-shot timer of a Clock.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// SystemClock is the wall clock.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }

type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time { return t.t.C }
func (t sysTimer) Stop() bool          { return t.t.Stop() }

// wait blocks until changed is closed, ctx ends, or, if wake is set, that time comes.
func wait(ctx context.Context, clock Clock, wake time.Time, changed <-chan struct{}) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var timeout <-chan time.Time
	if !wake.IsZero() {
		t := clock.NewTimer(wake.Sub(clock.Now()))
		defer t.Stop()
		timeout = t.C()
	}
	select {
	case <-timeout:
	case <-changed:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
