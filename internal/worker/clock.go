package worker

import "time"

// clock tells time and schedules calls. The lease keeper takes one so that its deadline logic
// is tested on a fake clock, never on sleeps; systemClock is the real one.
type clock interface {
	Now() time.Time
	// Stamp reads the clocks a lease is judged on (design rules 11 and 29).
	Stamp() stamp
	// AfterFunc calls f in its own goroutine after d.
	AfterFunc(d time.Duration, f func()) stopper
}

// stamp is a moment on the two clocks a lease is judged on: Go's monotonic clock, which the
// timers follow, and the boot clock, which also counts time the machine spent suspended (the
// monotonic clock stops then, while Postgres's now() runs on). A deadline has passed when it
// has passed on either, so a worker woken after a suspend longer than its lease knows at once
// that its lease is gone. Wall clocks are never compared (design rule 11).
type stamp struct {
	mono time.Time
	boot time.Duration
}

// add moves s on by d on both clocks.
func (s stamp) add(d time.Duration) stamp { return stamp{mono: s.mono.Add(d), boot: s.boot + d} }

// at is s carried forward to the monotonic reading now: the boot clock is moved on by as
// much as the monotonic clock moved since s. It reads no clock, so a suspend between s and
// now is not seen: s must be read after anything that may block (dispatch.go reads it again
// after anything its loop did besides starting claimed jobs), so that only CPU work lies
// between them, as between any fresh reading and arming a timer. A suspend after that is
// seen by the next heartbeat or the timer's own check (lease.go), which read both clocks.
func (s stamp) at(now time.Time) stamp {
	d := max(now.Sub(s.mono), 0)
	return stamp{mono: s.mono.Add(d), boot: s.boot + d}
}

// before reports whether s is earlier than t on both clocks: a deadline t has not passed at s.
func (s stamp) before(t stamp) bool { return s.mono.Before(t.mono) && s.boot < t.boot }

// until is how long from s to t on the monotonic clock (the timers'), never more than on the
// boot clock.
func (s stamp) until(t stamp) time.Duration { return min(t.mono.Sub(s.mono), t.boot-s.boot) }

// after reports whether s is later than t on the monotonic clock.
func (s stamp) after(t stamp) bool { return s.mono.After(t.mono) }

type stopper interface {
	// Stop prevents the call; it reports whether it did.
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Stamp() stamp { return stamp{mono: time.Now(), boot: bootTime()} }

func (systemClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
