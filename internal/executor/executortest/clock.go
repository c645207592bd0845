// Package executortest has a fake clock for the executor's timing tests.
package executortest

import (
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/executor"
)

// Clock is a fake executor.Clock: time moves only when Advance is called, and timers fire
// then. It is safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
	// waiters are signalled whenever a timer is created, so tests can wait for a goroutine
	// to block on the clock instead of sleeping.
	created chan struct{}
}

// NewClock returns a fake clock set to start.
func NewClock(start time.Time) *Clock {
	return &Clock{now: start, created: make(chan struct{}, 1024)}
}

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer returns a timer that fires when the clock passes now+d.
func (c *Clock) NewTimer(d time.Duration) executor.Timer {
	c.mu.Lock()
	t := &timer{c: c, at: c.now.Add(d), ch: make(chan time.Time, 1)}
	if d <= 0 {
		t.ch <- c.now
		t.fired = true
	} else {
		c.timers = append(c.timers, t)
	}
	c.mu.Unlock()
	select {
	case c.created <- struct{}{}:
	default:
	}
	return t
}

// TimerCreated returns a channel that receives once per timer created.
func (c *Clock) TimerCreated() <-chan struct{} { return c.created }

// Advance moves the clock forward by d and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	keep := c.timers[:0]
	var due []*timer
	for _, t := range c.timers {
		if !t.at.After(now) && !t.stopped {
			due = append(due, t)
		} else if !t.stopped {
			keep = append(keep, t)
		}
	}
	c.timers = keep
	for _, t := range due {
		t.fired = true
	}
	c.mu.Unlock()
	for _, t := range due {
		t.ch <- now
	}
}

type timer struct {
	c       *Clock
	at      time.Time
	ch      chan time.Time
	fired   bool
	stopped bool
}

func (t *timer) C() <-chan time.Time { return t.ch }

func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.fired || t.stopped {
		return false
	}
	t.stopped = true
	return true
}
