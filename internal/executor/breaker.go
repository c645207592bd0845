package executor

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/levee-dev/levee/leveetype"
)

// ErrBreakerOpen reports that a kind's circuit breaker is not admitting calls. Admit never
// returns it (it waits instead); it is for callers that must not wait, which check State and
// return ErrBreakerOpen themselves.
var ErrBreakerOpen = errors.New("circuit breaker open")

// BreakerConfig configures a Breaker. Zero fields take the defaults given; NewBreaker fills
// them in (Defaults) and checks the result (Validate).
type BreakerConfig struct {
	// Window is the sliding window over which the failure rate is computed. Outcomes are
	// kept in 10 buckets of Window/10, so an outcome counts for at least 9/10 of Window and
	// no longer than Window. Default 30s.
	Window time.Duration
	// MinCalls is how many outcomes the window must hold before the breaker may open, so that
	// one failure never trips it. Default 20.
	MinCalls int
	// FailureRate opens the breaker when failures/calls in the window reaches it (with at
	// least MinCalls calls). It must be in (0, 1]; 1 opens only when every call failed.
	// Default 0.5.
	FailureRate float64
	// OpenFor is how long the breaker stays open before it goes half-open. Default 30s.
	OpenFor time.Duration
	// HalfOpenCalls is the number of trial calls admitted while half-open; when all of them
	// succeed the breaker closes. Default 3.
	HalfOpenCalls int
	// Scope says whose outcomes the breaker counts and who it stops: ScopeFleet (default),
	// one breaker per kind shared by every worker serving it (FleetBreaker, design rule 37),
	// or ScopeWorker, one per worker (Breaker).
	Scope string
	// Clock tells time and makes Admit's timers. Default SystemClock.
	Clock Clock
	// OnStateChangeFunc, if set, is called after each change of state (from, to). Calls are
	// made outside the breaker's lock, one at a time and in the order of the changes, by
	// whichever goroutine is settling or admitting at the time; they may use the breaker but
	// should return quickly. The change from open to half-open is noticed when the breaker is
	// next used (Admit, Record, Release), which a waiting Admit does when OpenFor ends.
	// Default nil.
	OnStateChangeFunc func(from, to BreakerState)
}

// Defaults returns c with every zero field set to its default.
func (c BreakerConfig) Defaults() BreakerConfig {
	c.Window = cmp.Or(c.Window, 30*time.Second)
	c.MinCalls = cmp.Or(c.MinCalls, 20)
	c.FailureRate = cmp.Or(c.FailureRate, 0.5)
	c.OpenFor = cmp.Or(c.OpenFor, 30*time.Second)
	c.HalfOpenCalls = cmp.Or(c.HalfOpenCalls, 3)
	c.Scope = cmp.Or(c.Scope, ScopeFleet)
	if c.Clock == nil {
		c.Clock = SystemClock
	}
	return c
}

// The scopes of a breaker (BreakerConfig.Scope).
const (
	ScopeFleet  = leveetype.ScopeFleet
	ScopeWorker = leveetype.ScopeWorker
)

// BreakerState is the state of a Breaker.
type BreakerState int

const (
	// BreakerClosed admits every call and counts outcomes in the sliding window.
	BreakerClosed BreakerState = iota
	// BreakerOpen admits nothing until OpenFor has passed.
	BreakerOpen
	// BreakerHalfOpen admits HalfOpenCalls trial calls, whose outcomes close or reopen it.
	BreakerHalfOpen
)

// String returns "closed", "open" or "half_open".
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half_open"
	}
	return fmt.Sprintf("BreakerState(%d)", int(s))
}

// BreakerSnapshot is a Breaker's state at one instant, for status and metrics.
type BreakerSnapshot struct {
	State BreakerState
	// Calls and Failures count the outcomes recorded while closed that are still in the
	// window. Opening keeps them (they show why it opened) until they age out; closing again
	// empties the window.
	Calls    int
	Failures int
	// OpenUntil is when the breaker goes half-open; zero unless State is BreakerOpen.
	OpenUntil time.Time
	// Fleet is true for a FleetBreaker's view of the fleet's breaker; then Calls and Failures
	// are the fleet's, and the fields below describe the shared record. CutOff is true while
	// the worker cannot reach that record and decides alone.
	Fleet  bool
	CutOff bool
	Gen    uint64
	Since  time.Time
	Reason string
	By     string
	// Trials are the trial calls out while half-open; TrialsOK those that succeeded.
	Trials   int
	TrialsOK int
}

// FailureRate is Failures/Calls, 0 without calls.
func (s BreakerSnapshot) FailureRate() float64 { return failureRate(s.Calls, s.Failures) }

// failureRate is failures/calls, 0 without calls.
func failureRate(calls, failures int) float64 {
	if calls <= 0 {
		return 0
	}
	return float64(failures) / float64(calls)
}

// Breaker is a circuit breaker for one downstream (by default one kind), shared by all of a
// worker's goroutines for it (design rule 18). Create one with NewBreaker; the zero value is
// not usable. It is safe for concurrent use.
//
// Closed, it admits every call and keeps the outcomes of the last Window; once the window
// holds at least MinCalls outcomes and failures/calls reaches FailureRate, it opens. Open, it
// admits nothing for OpenFor, then goes half-open. Half-open, it hands out HalfOpenCalls trial
// permits: one failure opens it again for a fresh OpenFor; when all of them have succeeded it
// closes with an empty window.
//
// Most callers want Admit before pulling work, then one settlement per admitted permit: Record
// for a call that reached the downstream (failure true for 5xx, timeouts and connection
// errors; false for successes and for answers that are not the downstream's fault, such as a
// 4xx), Release for a permit that made no call or whose outcome says nothing about the
// downstream (fewer messages pulled than admitted, cancellation, our own rejections).
//
// Permits carry no identity, so a settlement that arrives after a change of state is taken as
// one of the current state's permits where there are any: while half-open, Record and Release
// settle trial permits first, and settlements beyond those (permits admitted before the
// breaker opened) change nothing. While open, settlements change nothing.
type Breaker struct {
	cfg   BreakerConfig
	clock Clock

	mu        sync.Mutex
	state     BreakerState // as last brought up to date; see catchUp
	openUntil time.Time    // when open: when it goes half-open
	window    breakerWindow
	trialsOut int // half-open: trial permits handed out and not yet settled
	trialsOK  int // half-open: trials that succeeded
	// changed is closed and replaced whenever the state changes or trial permits come back,
	// waking every Admit waiting on it.
	changed chan struct{}
	// pending holds state changes not yet passed to OnStateChangeFunc; delivering is true
	// while a goroutine is passing them on (see unlock).
	pending    []breakerChange
	delivering bool
}

type breakerChange struct{ from, to BreakerState }

// NewBreaker returns a closed breaker with cfg's defaults filled in. cfg's values must be
// valid: they come from a policy that leveetype.Policy.Validate accepted.
func NewBreaker(cfg BreakerConfig) *Breaker {
	cfg = cfg.Defaults()
	return &Breaker{
		cfg:     cfg,
		clock:   cfg.Clock,
		window:  newBreakerWindow(cfg.Clock.Now(), cfg.Window),
		changed: make(chan struct{}),
	}
}

// State returns the state at the clock's current time. It changes nothing: an open breaker
// whose OpenFor has passed reads as half-open.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateAt(b.clock.Now())
}

// OpenUntil returns when an open breaker goes half-open, or the zero time unless it is open.
func (b *Breaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stateAt(b.clock.Now()) != BreakerOpen {
		return time.Time{}
	}
	return b.openUntil
}

// Snapshot returns the state, the window's counts and OpenUntil at the clock's current time.
func (b *Breaker) Snapshot() BreakerSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	s := BreakerSnapshot{State: b.stateAt(now)}
	s.Calls, s.Failures = b.window.totals(now)
	if s.State == BreakerOpen {
		s.OpenUntil = b.openUntil
	}
	return s
}

// Admit waits until calls may be made and returns how many permits, up to max, it handed
// out: max at once while closed; while half-open, as many of the trial permits not yet handed
// out as max allows, waiting while all are out; while open, it waits for OpenFor to end. It
// returns ctx's error if ctx ends first, having handed out nothing. A max below 1 returns 0 at
// once. Each permit must later be settled by exactly one Record or Release.
func (b *Breaker) Admit(ctx context.Context, max int) (int, error) {
	n, _, err := b.AdmitTrial(ctx, max)
	return n, err
}

// AdmitTrial is Admit that also tells whether the permits are trials.
func (b *Breaker) AdmitTrial(ctx context.Context, max int) (int, bool, error) {
	if max < 1 {
		return 0, false, nil
	}
	for {
		b.mu.Lock()
		b.catchUp(b.clock.Now())
		n := 0
		switch b.state {
		case BreakerClosed:
			n = max
		case BreakerHalfOpen:
			n = min(max, b.cfg.HalfOpenCalls-b.trialsOut-b.trialsOK)
			b.trialsOut += n
		}
		openUntil, changed, trial := b.openUntil, b.changed, b.state == BreakerHalfOpen
		b.unlock()
		if n > 0 {
			return n, trial, nil
		}
		if err := wait(ctx, b.clock, openUntil, changed); err != nil {
			return 0, false, err
		}
	}
}

// Record settles one admitted permit with the outcome of a call that reached the downstream;
// failure is true when the outcome is a signal that the downstream is failing.
func (b *Breaker) Record(failure bool) {
	b.mu.Lock()
	now := b.clock.Now()
	b.catchUp(now)
	switch b.state {
	case BreakerClosed:
		b.window.add(now, failure)
		calls, failures := b.window.totals(now)
		if calls >= b.cfg.MinCalls && failureRate(calls, failures) >= b.cfg.FailureRate {
			b.open(now)
		}
	case BreakerHalfOpen:
		if b.trialsOut == 0 {
			break // a permit from before the breaker opened: old news
		}
		b.trialsOut--
		if failure {
			b.open(now)
			break
		}
		b.trialsOK++
		if b.trialsOK >= b.cfg.HalfOpenCalls {
			b.close()
		}
	}
	b.unlock()
}

// Release settles n admitted permits that made no call. While half-open they become trial
// permits that Admit may hand out again.
func (b *Breaker) Release(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	b.catchUp(b.clock.Now())
	if b.state == BreakerHalfOpen && b.trialsOut > 0 {
		b.trialsOut -= min(n, b.trialsOut)
		b.broadcast()
	}
	b.unlock()
}

// Reset closes the breaker with an empty window, whatever its state: an operator's word that
// the downstream is back. Admits waiting for it wake up at once; permits handed out before
// settle as usual.
func (b *Breaker) Reset() {
	b.mu.Lock()
	b.catchUp(b.clock.Now())
	b.openUntil = time.Time{}
	if b.state == BreakerClosed {
		b.window.reset()
	} else {
		b.close()
	}
	b.unlock()
}

// stateAt returns the state at now without changing it.
func (b *Breaker) stateAt(now time.Time) BreakerState {
	if b.state == BreakerOpen && !now.Before(b.openUntil) {
		return BreakerHalfOpen
	}
	return b.state
}

// catchUp makes an open breaker whose OpenFor has passed half-open. b.mu is held.
func (b *Breaker) catchUp(now time.Time) {
	if b.state == BreakerOpen && !now.Before(b.openUntil) {
		b.openUntil = time.Time{}
		b.trialsOut, b.trialsOK = 0, 0
		b.setState(BreakerHalfOpen)
	}
}

// open opens the breaker until now+OpenFor. b.mu is held.
func (b *Breaker) open(now time.Time) {
	b.openUntil = now.Add(b.cfg.OpenFor)
	b.trialsOut, b.trialsOK = 0, 0
	b.setState(BreakerOpen)
}

// close closes the breaker with an empty window. b.mu is held.
func (b *Breaker) close() {
	b.window.reset()
	b.trialsOut, b.trialsOK = 0, 0
	b.setState(BreakerClosed)
}

// setState moves to state to, queues the change for OnStateChangeFunc and wakes waiters.
// b.mu is held.
func (b *Breaker) setState(to BreakerState) {
	if b.cfg.OnStateChangeFunc != nil {
		b.pending = append(b.pending, breakerChange{from: b.state, to: to})
	}
	b.state = to
	b.broadcast()
}

// broadcast wakes every Admit waiting on b.changed. b.mu is held.
func (b *Breaker) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// unlock releases b.mu, first passing pending state changes to OnStateChangeFunc outside the
// lock. Only one goroutine delivers at a time, so changes arrive in order; one that finds
// another delivering leaves its changes to it.
func (b *Breaker) unlock() {
	if b.delivering || len(b.pending) == 0 {
		b.mu.Unlock()
		return
	}
	b.delivering = true
	done := false
	defer func() {
		if !done { // a callback panicked: let the next change be delivered
			b.mu.Lock()
			b.delivering = false
			b.mu.Unlock()
		}
	}()
	for len(b.pending) > 0 {
		batch := b.pending
		b.pending = nil
		b.mu.Unlock()
		for _, c := range batch {
			b.cfg.OnStateChangeFunc(c.from, c.to)
		}
		b.mu.Lock()
	}
	b.delivering = false
	done = true
	b.mu.Unlock()
}

// breakerWindow counts outcomes over a sliding window in a ring of time buckets. Bucket i
// covers [start+i·width, start+(i+1)·width); a bucket is in the window at now while its index
// is one of the last len(buckets) up to now's.
type breakerWindow struct {
	start   time.Time
	width   time.Duration
	buckets []breakerBucket
}

type breakerBucket struct {
	index           int64
	calls, failures int
}

// breakerBuckets is how many buckets a window is cut into.
const breakerBuckets = 10

func newBreakerWindow(start time.Time, window time.Duration) breakerWindow {
	n := breakerBuckets
	if window < breakerBuckets {
		n = int(window) // windows under 10ns: one bucket per nanosecond
	}
	return breakerWindow{start: start, width: window / time.Duration(n), buckets: make([]breakerBucket, n)}
}

// index returns the number of the bucket now falls in.
func (w *breakerWindow) index(now time.Time) int64 {
	d := now.Sub(w.start)
	i := int64(d / w.width)
	if d < 0 && d%w.width != 0 {
		i-- // floor, for a clock that reads before start
	}
	return i
}

func (w *breakerWindow) add(now time.Time, failure bool) {
	f := 0
	if failure {
		f = 1
	}
	w.addN(now, 1, f)
}

// addN counts calls outcomes at now, failures of them failed.
func (w *breakerWindow) addN(now time.Time, calls, failures int) {
	i := w.index(now)
	n := int64(len(w.buckets))
	bk := &w.buckets[(i%n+n)%n]
	if bk.index != i {
		*bk = breakerBucket{index: i}
	}
	bk.calls += calls
	bk.failures += failures
}

func (w *breakerWindow) totals(now time.Time) (calls, failures int) {
	i := w.index(now)
	n := int64(len(w.buckets))
	for _, bk := range w.buckets {
		if bk.index > i-n && bk.index <= i {
			calls += bk.calls
			failures += bk.failures
		}
	}
	return calls, failures
}

// recentBuckets is how many of the window's latest buckets make its recent part (a fifth).
const recentBuckets = 2

// recent returns the totals of the window's recent part: the bucket now falls in and the one
// before it.
func (w *breakerWindow) recent(now time.Time) (calls, failures int) {
	i := w.index(now)
	n := int64(min(recentBuckets, len(w.buckets)))
	for _, bk := range w.buckets {
		if bk.index > i-n && bk.index <= i {
			calls += bk.calls
			failures += bk.failures
		}
	}
	return calls, failures
}

func (w *breakerWindow) reset() {
	clear(w.buckets)
}
