package worker

import "time"

// clock tells time and schedules calls. The lease keeper takes one so that its deadline logic
// is tested on a fake clock, never on sleeps; systemClock is the real one. Times compare on
// the monotonic clock (time.Time carries its reading), never the wall clock (design rule 11).
type clock interface {
	Now() time.Time
	// AfterFunc calls f in its own goroutine after d.
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a scheduled call that may be cancelled.
type stopper interface {
	// Stop prevents the call; it reports whether it did.
	Stop() bool
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }
