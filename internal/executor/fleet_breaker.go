package executor

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// FleetBreakerConfig configures a FleetBreaker.
type FleetBreakerConfig struct {
	// Breaker is the kind's breaker policy; its thresholds apply to the fleet's outcomes.
	Breaker BreakerConfig
	// Worker names this worker in the shared record.
	Worker string
	// Sync stores the shared record.
	Sync BreakerSync
	// TrialTTL is how long a granted trial holds its place before another worker may take
	// it: longer than an attempt and its commit. Default 1m.
	TrialTTL time.Duration
	// SyncTimeout bounds one change of the shared record. Default 2s.
	SyncTimeout time.Duration
	// LocalAfter is how long changes of the shared record may keep failing before this worker
	// decides alone, from its own outcomes (design rule 37). Default 3s.
	LocalAfter time.Duration
}

// FleetBreaker is one worker's view of a kind's breaker shared by the fleet (design rule 37).
// Its window counts the fleet's outcomes: this worker's as they are recorded, the others' as
// they arrive (RecordRemote). Changes of state are made by compare-and-set on the shared
// record, by whichever worker sees the reason first, and reach every worker through Apply.
// While the shared record cannot be changed for LocalAfter, the worker is cut off and decides
// alone on the same rules, from its own outcomes; it rejoins (taking the shared record as it
// finds it) as soon as the record is read again.
//
// It is safe for concurrent use. Create one with NewFleetBreaker.
type FleetBreaker struct {
	cfg   FleetBreakerConfig
	bc    BreakerConfig
	clock Clock

	mu    sync.Mutex
	rec   Shared
	rev   uint64
	local bool // cut off: changes are made here alone
	// reasserting is set while a rejoining worker writes the opening it made alone.
	reasserting bool
	base        uint64    // the shared generation when the worker was cut off
	alone       bool      // cut off, it opened alone
	trialsLocal bool      // the trial permits held were granted from the record kept alone
	failRead    time.Time // first failed read since the last good one
	failWrite   time.Time // first failed change since the last good one
	lastWrite   time.Time // last failed change
	window      breakerWindow
	opening     uint64 // the generation an opening was proposed for
	unsent      fleetReport
	trialGen    uint64 // generation of the trial permits held
	trials      int    // trial permits held and not yet settled
	changed     chan struct{}
	pending     []breakerChange
	// wg tracks proposals still running; ctx ends them (Close).
	wg     sync.WaitGroup
	ctx    context.Context
	cancel context.CancelFunc
}

// fleetReport is a worker's outcomes of one epoch not yet sent to the fleet.
type fleetReport struct {
	epoch           uint64
	calls, failures int
}

// NewFleetBreaker returns a breaker that is closed until Apply says otherwise.
func NewFleetBreaker(cfg FleetBreakerConfig) (*FleetBreaker, error) {
	bc := cfg.Breaker.Defaults()
	if cfg.Sync == nil || cfg.Worker == "" {
		return nil, fmt.Errorf("fleet breaker: Sync and Worker are required")
	}
	if cfg.TrialTTL <= 0 {
		cfg.TrialTTL = time.Minute
	}
	if cfg.SyncTimeout <= 0 {
		cfg.SyncTimeout = 2 * time.Second
	}
	if cfg.LocalAfter <= 0 {
		cfg.LocalAfter = 3 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &FleetBreaker{
		cfg: cfg, bc: bc, clock: bc.Clock,
		window:  newBreakerWindow(bc.Clock.Now(), bc.Window),
		changed: make(chan struct{}),
		ctx:     ctx, cancel: cancel,
	}, nil
}

// Close stops the changes still being proposed and waits for them. The breaker keeps
// answering with what it knows.
func (b *FleetBreaker) Close() {
	b.cancel()
	b.wg.Wait()
}

// Apply takes the shared record at revision rev, as the store's watch delivered it (a deleted
// record is the zero Shared): a newer revision replaces what this worker knew, and a cut-off
// worker rejoins the fleet (rejoin).
func (b *FleetBreaker) Apply(s Shared, rev uint64) {
	b.mu.Lock()
	b.failRead = time.Time{}
	b.rejoin(s, rev)
	b.unlock()
}

// rejoin takes s, read from the store at revision rev (0: there is none). A worker in the
// fleet takes it if it is newer. A cut-off worker takes it as it is and rejoins, unless it
// opened alone and the fleet's record is closed: then it first writes its opening into the
// shared record, in the background, and rejoins once that is written. b.mu is held.
func (b *FleetBreaker) rejoin(s Shared, rev uint64) {
	if !b.local {
		missing := rev == 0 && (b.rev > 0 || b.rec.Gen != 0 || b.rec.State != BreakerClosed)
		if rev > b.rev || missing { // a record deleted (or never written) reads as closed
			b.rev = rev
			b.set(s)
		}
		return
	}
	now := b.clock.Now()
	if b.alone && b.rec.stateAt(now) != BreakerClosed && s.stateAt(now) == BreakerClosed && s.Gen <= b.base {
		if !b.reasserting {
			b.reasserting = true
			me, reason := b.cfg.Worker, "opened by a worker cut off from the fleet's record: "+b.rec.Reason
			b.wg.Go(func() {
				base := b.base
				b.sync(b.ctx, func(cur Shared, now time.Time) (Shared, bool) {
					if cur.stateAt(now) != BreakerClosed || cur.Gen > base {
						return cur, false
					}
					return cur.opened(now, b.bc.OpenFor, me, reason), true
				}, nil)
				b.mu.Lock()
				b.reasserting = false
				b.mu.Unlock()
			})
		}
		return
	}
	b.local, b.failRead, b.failWrite = false, time.Time{}, time.Time{}
	if b.trialsLocal || b.trialGen != s.Gen {
		b.trials, b.trialGen = 0, 0 // permits of the local generations are old news
	}
	b.trialsLocal, b.alone = false, false
	b.rev = rev
	b.set(s)
	b.broadcast()
}

// set makes s the record, emptying the window when a new epoch begins. b.mu is held.
func (b *FleetBreaker) set(s Shared) {
	now := b.clock.Now()
	from, to := b.rec.stateAt(now), s.stateAt(now)
	if s.Epoch != b.rec.Epoch {
		b.window.reset()
		b.unsent = fleetReport{epoch: s.Epoch}
	}
	if s.Gen != b.rec.Gen {
		b.opening = 0
	}
	b.rec = s
	if from != to && b.bc.OnStateChangeFunc != nil {
		b.pending = append(b.pending, breakerChange{from: from, to: to})
	}
	b.broadcast()
}

// Reachable tells the breaker what a read of the store answered just now: the record at
// revision rev, none (found false: the record reads as closed), or an error. Reads that fail
// for LocalAfter cut the worker off; a good read rejoins a cut-off worker (rejoin).
func (b *FleetBreaker) Reachable(s Shared, rev uint64, found bool, err error) {
	b.mu.Lock()
	defer b.unlock()
	if err != nil {
		b.failed(&b.failRead)
		return
	}
	b.failRead = time.Time{}
	if !found {
		if !b.local {
			return // a deletion reaches the fleet through the watch, with its revision; a
			// read's "not found" may be older than a record the watch delivered since
		}
		s, rev = Shared{}, 0
	}
	b.rejoin(s, rev)
}

// failed notes a failed read or change (since, one of failRead and failWrite), cutting the
// worker off once either has failed for LocalAfter. b.mu is held.
func (b *FleetBreaker) failed(since *time.Time) {
	now := b.clock.Now()
	if since.IsZero() {
		*since = now
	}
	if !b.local && now.Sub(*since) >= b.cfg.LocalAfter {
		b.local = true
		b.base, b.alone = b.rec.Gen, false
		b.broadcast()
	}
}

// RecordRemote adds another worker's outcomes of epoch epoch (Shared.Epoch) to the fleet's
// window. Outcomes of another epoch are dropped: they predate the last close, or follow one
// this worker has not seen yet.
func (b *FleetBreaker) RecordRemote(by string, epoch uint64, calls, failures int) {
	if by == b.cfg.Worker || calls <= 0 || failures < 0 {
		return
	}
	calls, failures = min(calls, maxReportCalls), min(failures, calls, maxReportCalls)
	b.mu.Lock()
	now := b.clock.Now()
	if epoch == b.rec.Epoch {
		b.window.addN(now, calls, failures)
		b.checkOpen(now)
	}
	b.unlock()
}

// maxReportCalls bounds the outcomes one report may add: far more than a worker settles in a
// report interval, small enough that no sum of reports can overflow the window's counts.
const maxReportCalls = 100_000

// TakeReport returns this worker's outcomes not yet sent to the fleet, with their epoch, and
// forgets them.
func (b *FleetBreaker) TakeReport() (epoch uint64, calls, failures int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.unsent
	b.unsent = fleetReport{epoch: b.rec.Epoch}
	return r.epoch, r.calls, r.failures
}

// Worker returns the name this worker goes by in the shared record.
func (b *FleetBreaker) Worker() string { return b.cfg.Worker }

// Admit implements CircuitBreaker: closed, max permits at once; open, it waits; half-open, it
// asks the fleet for trial calls and waits while the fleet's trials are all out.
func (b *FleetBreaker) Admit(ctx context.Context, max int) (int, error) {
	n, _, err := b.AdmitTrial(ctx, max)
	return n, err
}

// AdmitTrial is Admit that also tells whether the permits are trials.
func (b *FleetBreaker) AdmitTrial(ctx context.Context, max int) (int, bool, error) {
	if max < 1 {
		return 0, false, nil
	}
	for {
		b.mu.Lock()
		now := b.clock.Now()
		rec, changed, local := b.rec, b.changed, b.local
		var wake time.Time
		switch rec.stateAt(now) {
		case BreakerClosed:
			b.unlock()
			return max, false, nil
		case BreakerOpen:
			wake = rec.Until
		case BreakerHalfOpen:
			if local {
				n := b.grantLocked(now, max)
				b.unlock()
				if n > 0 {
					return n, true, nil
				}
			} else {
				b.unlock()
				if n := b.askTrials(ctx, rec.Gen, max); n > 0 {
					return n, true, nil
				}
			}
			wake = now.Add(trialPoll)
			b.mu.Lock()
			changed = b.changed
			for _, t := range b.rec.activeTrials(now) {
				if t.Until.Before(wake) {
					wake = t.Until
				}
			}
		}
		b.unlock()
		if err := wait(ctx, b.clock, wake, changed); err != nil {
			return 0, false, err
		}
	}
}

// trialPoll bounds how long a half-open Admit waits before it asks for a trial again.
const trialPoll = 250 * time.Millisecond

// grant adds up to max trials for this worker to s at now; it returns s and how many it added.
func (b *FleetBreaker) grant(s Shared, now time.Time, max int) (Shared, int) {
	active := s.activeTrials(now)
	n := min(max, b.bc.HalfOpenCalls-s.TrialsOK-len(active))
	if n <= 0 {
		return s, 0
	}
	for range n {
		active = append(active, Trial{By: b.cfg.Worker, Until: now.Add(b.cfg.TrialTTL)})
	}
	s.Trials = active
	return s, n
}

// grantLocked grants trials from the record this worker keeps alone. b.mu is held.
func (b *FleetBreaker) grantLocked(now time.Time, max int) int {
	s, n := b.grant(b.rec, now, max)
	if n > 0 {
		b.rec = s
		b.take(s.Gen, n)
		b.trialsLocal = true
	}
	return n
}

// take notes n trial permits of generation gen held. b.mu is held.
func (b *FleetBreaker) take(gen uint64, n int) {
	if b.trialGen != gen {
		b.trialGen, b.trials = gen, 0
	}
	b.trials += n
}

// askTrials asks the shared record for up to max trials of generation gen.
func (b *FleetBreaker) askTrials(ctx context.Context, gen uint64, max int) int {
	granted := 0
	b.sync(ctx, func(cur Shared, now time.Time) (Shared, bool) {
		granted = 0
		if cur.Gen != gen || cur.stateAt(now) != BreakerHalfOpen {
			return cur, false
		}
		s, n := b.grant(cur, now, max)
		granted = n
		return s, n > 0
	}, func(s Shared) {
		if granted > 0 && s.Gen == gen {
			b.take(gen, granted)
		} else {
			granted = 0
		}
	})
	return granted
}

// sync changes the shared record with fn, waiting for the answer, and applies what the store
// returns; then, with b.mu held, it calls done with the stored record. A change that fails
// counts towards being cut off, and done is not called.
func (b *FleetBreaker) sync(ctx context.Context, fn func(cur Shared, now time.Time) (Shared, bool), done func(Shared)) bool {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, b.cfg.SyncTimeout)
	defer cancel()
	s, rev, err := b.cfg.Sync.Update(ctx, func(cur Shared, _ bool) (Shared, bool) { return fn(cur, b.clock.Now()) })
	b.mu.Lock()
	defer b.unlock()
	if err != nil {
		if parent.Err() == nil { // a caller that gave up says nothing of the store
			if now := b.clock.Now(); !b.lastWrite.IsZero() && now.Sub(b.lastWrite) > b.cfg.LocalAfter {
				b.failWrite = time.Time{} // no change was tried meanwhile: not failing "running"
			}
			b.failed(&b.failWrite)
			b.lastWrite = b.clock.Now()
		}
		return false
	}
	b.failRead, b.failWrite = time.Time{}, time.Time{}
	if b.local {
		b.local = false
		if b.trialsLocal || b.trialGen != s.Gen {
			b.trials, b.trialGen = 0, 0 // permits of the local generations are old news
		}
		b.trialsLocal, b.alone = false, false
		b.rev = 0 // take the shared record as it is
		b.broadcast()
	}
	b.rejoin(s, rev)
	if done != nil {
		done(s)
	}
	return true
}

// propose makes the change fn in the background: on the shared record, retried until it is
// made or the worker is cut off, or at once on the record this worker keeps alone. b.mu is
// held.
func (b *FleetBreaker) propose(fn func(cur Shared, now time.Time) (Shared, bool)) {
	if b.local {
		if s, ok := fn(b.rec, b.clock.Now()); ok {
			b.set(s)
			b.alone = s.State == BreakerOpen
		}
		return
	}
	b.wg.Go(func() {
		for b.ctx.Err() == nil {
			if b.sync(b.ctx, fn, nil) {
				return
			}
			b.mu.Lock()
			local := b.local
			b.mu.Unlock()
			if local {
				b.mu.Lock()
				b.propose(fn)
				b.unlock()
				return
			}
			time.Sleep(100 * time.Millisecond) // pacing only: the cut-off is timed on b.clock
		}
	})
}

// Wait waits for the changes proposed so far to be made or given up.
func (b *FleetBreaker) Wait() { b.wg.Wait() }

// Record implements CircuitBreaker: the outcome joins the fleet's window (and this worker's
// next report); a trial's outcome closes or reopens the breaker for the fleet.
func (b *FleetBreaker) Record(failure bool) {
	b.mu.Lock()
	now := b.clock.Now()
	f := 0
	if failure {
		f = 1
	}
	b.window.addN(now, 1, f)
	if b.unsent.epoch == b.rec.Epoch {
		b.unsent.calls++
		b.unsent.failures += f
	}
	switch b.rec.stateAt(now) {
	case BreakerClosed:
		b.checkOpen(now)
	case BreakerHalfOpen:
		if b.trials == 0 || b.trialGen != b.rec.Gen {
			break // a permit from before the breaker opened: old news
		}
		b.trials--
		gen, me := b.rec.Gen, b.cfg.Worker
		if failure {
			b.propose(func(cur Shared, now time.Time) (Shared, bool) {
				if cur.Gen != gen || cur.stateAt(now) != BreakerHalfOpen {
					return cur, false
				}
				return cur.opened(now, b.bc.OpenFor, me, "a trial call failed"), true
			})
			break
		}
		b.propose(func(cur Shared, now time.Time) (Shared, bool) {
			if cur.Gen != gen || cur.stateAt(now) != BreakerHalfOpen {
				return cur, false
			}
			cur.Trials = dropTrial(cur.Trials, me)
			cur.TrialsOK++
			if cur.TrialsOK >= b.bc.HalfOpenCalls {
				return cur.closed(now, me, fmt.Sprintf("%d trial calls succeeded", cur.TrialsOK)), true
			}
			return cur, true
		})
	}
	b.unlock()
}

// dropTrial removes one trial of worker by.
func dropTrial(ts []Trial, by string) []Trial {
	if i := slices.IndexFunc(ts, func(t Trial) bool { return t.By == by }); i >= 0 {
		return slices.Delete(slices.Clone(ts), i, i+1)
	}
	return ts
}

// checkOpen proposes opening when the fleet's window crosses the thresholds, once per
// generation. b.mu is held and the record is closed.
func (b *FleetBreaker) checkOpen(now time.Time) {
	if b.rec.stateAt(now) != BreakerClosed || b.opening == b.rec.Gen+1 {
		return
	}
	calls, failures := b.window.totals(now)
	if calls < b.bc.MinCalls || failureRate(calls, failures) < b.bc.FailureRate {
		return
	}
	gen, me := b.rec.Gen, b.cfg.Worker
	b.opening = gen + 1
	reason := fmt.Sprintf("%d of %d calls failed in the fleet's window", failures, calls)
	b.propose(func(cur Shared, now time.Time) (Shared, bool) {
		if cur.Gen != gen || cur.State != BreakerClosed {
			return cur, false
		}
		return cur.opened(now, b.bc.OpenFor, me, reason), true
	})
}

// Release implements CircuitBreaker: released trial permits go back to the fleet.
func (b *FleetBreaker) Release(n int) {
	if n <= 0 {
		return
	}
	b.mu.Lock()
	now := b.clock.Now()
	if b.trials > 0 && b.trialGen == b.rec.Gen && b.rec.stateAt(now) == BreakerHalfOpen {
		n = min(n, b.trials)
		b.trials -= n
		gen, me := b.rec.Gen, b.cfg.Worker
		b.propose(func(cur Shared, _ time.Time) (Shared, bool) {
			if cur.Gen != gen {
				return cur, false
			}
			for range n {
				cur.Trials = dropTrial(cur.Trials, me)
			}
			return cur, true
		})
	}
	b.unlock()
}

// Reset implements CircuitBreaker: it closes the breaker for the fleet.
func (b *FleetBreaker) Reset() { b.ResetBy(b.cfg.Worker) }

// ResetBy closes the breaker for the fleet on behalf of by, and waits for the change.
func (b *FleetBreaker) ResetBy(by string) {
	fn := func(cur Shared, now time.Time) (Shared, bool) { return cur.Reset(now, by), true }
	b.mu.Lock()
	local := b.local
	if local {
		b.propose(fn)
	}
	b.unlock()
	if !local {
		b.sync(context.Background(), fn, nil)
	}
}

// State implements CircuitBreaker.
func (b *FleetBreaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rec.stateAt(b.clock.Now())
}

// OpenUntil implements CircuitBreaker.
func (b *FleetBreaker) OpenUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.rec.stateAt(b.clock.Now()) != BreakerOpen {
		return time.Time{}
	}
	return b.rec.Until
}

// Shared returns the record as this worker knows it.
func (b *FleetBreaker) Shared() Shared {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rec
}

// Snapshot implements CircuitBreaker. Calls and Failures are the fleet's, as this worker has
// heard of them.
func (b *FleetBreaker) Snapshot() BreakerSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	s := BreakerSnapshot{State: b.rec.stateAt(now), Fleet: true, CutOff: b.local, Gen: b.rec.Gen,
		Since: b.rec.Since, Reason: b.rec.Reason, By: b.rec.By, TrialsOK: b.rec.TrialsOK,
		Trials: len(b.rec.activeTrials(now))}
	s.Calls, s.Failures = b.window.totals(now)
	if s.State == BreakerOpen {
		s.OpenUntil = b.rec.Until
	}
	return s
}

// Outage implements CircuitBreaker over the fleet's window.
func (b *FleetBreaker) Outage(own int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	return outage(b.rec.stateAt(now), &b.window, now, own, b.bc.FailureRate)
}

// broadcast wakes every Admit waiting. b.mu is held.
func (b *FleetBreaker) broadcast() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// unlock releases b.mu and passes pending state changes to OnStateChangeFunc.
func (b *FleetBreaker) unlock() {
	pending := b.pending
	b.pending = nil
	b.mu.Unlock()
	for _, c := range pending {
		b.bc.OnStateChangeFunc(c.from, c.to)
	}
}
