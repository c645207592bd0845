package worker

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
)

// leaseTimes are one kind's lease durations (design rule 29).
type leaseTimes struct {
	lease  time.Duration // L: the kind's ack_wait
	every  time.Duration // h = L/3: how often leases are extended
	margin time.Duration // m: how long before anyone may take a key over the worker stops
}

func newLeaseTimes(ackWait time.Duration) leaseTimes {
	return leaseTimes{
		lease:  ackWait,
		every:  (ackWait / 3).Round(time.Millisecond),
		margin: min(max(ackWait/10, 250*time.Millisecond), 5*time.Second).Round(time.Millisecond),
	}
}

// held is how long after sending a claim or an extension that Postgres confirmed the worker
// counts the lease as its own: L + h, so that a Postgres outage shorter than L never
// cancels an attempt whose lease was extended at most h before it began.
func (t leaseTimes) held() time.Duration { return t.lease + t.every }

// stored is the lease written to Postgres: m longer than held, so that the worker cancels
// an attempt at least m before the database lets anyone take its key over (its now() was at
// least the send time).
func (t leaseTimes) stored() time.Duration { return t.held() + t.margin }

// retry is how soon a failed extension is tried again.
func (t leaseTimes) retry() time.Duration { return max(t.every/4, 100*time.Millisecond) }

// try bounds one extension: well below h, so that a statement stuck on a dead connection (a
// silent outage) leaves time for tries on fresh ones before the deadline. A healthy extension
// takes milliseconds.
func (t leaseTimes) try() time.Duration {
	return min(max(t.every/2, 50*time.Millisecond), 5*time.Second)
}

// leaseState says what the lease keeper does for an attempt.
type leaseState int

const (
	// leaseHeld: extended in Postgres and kept in progress in JetStream.
	leaseHeld leaseState = iota
	// leaseLost: its deadline passed unconfirmed, or Postgres said the fence moved on. The
	// handler was cancelled (ErrLeaseLost); nothing is extended, the message is left to
	// lapse. A fenced commit may still land if nobody took the key over.
	leaseLost
	// leaseLeft: the handler runs past its timeout ignoring its context; its lease is left
	// to lapse so that another worker retries the job (design rule 21).
	leaseLeft
)

// attemptLease is an attempt's lease as its worker knows it.
type attemptLease struct {
	mu    sync.Mutex
	state leaseState
	// until is the moment up to which the lease is known to hold.
	until stamp
	// settling is set once the handler returned: the outcome is being committed, and the
	// message stays in progress past until, while the commit is retried (design rule 30).
	settling bool
	// done is set once the attempt is no longer kept: a deadline firing late does nothing.
	done  bool
	timer stopper
}

// leaseKeeper keeps the leases of one kind's attempts: every h it tells JetStream that their
// messages are in progress and extends their leases in Postgres in one statement; an attempt
// whose lease can no longer be known to hold is cancelled with idempotency.ErrLeaseLost
// (design rule 29).
type leaseKeeper struct {
	times  leaseTimes
	clock  clock
	ledger interface {
		Heartbeat(ctx context.Context, leases []idempotency.Lease, d time.Duration) ([]idempotency.LeaseStatus, error)
		DropIdle(ctx context.Context)
	}
	log     *slog.Logger
	metrics *metrics.Metrics

	mu   sync.Mutex
	held map[*attempt]struct{}
}

// register starts keeping a's lease, which Postgres granted to a statement sent at sent.
// answered is a stamp read after Postgres answered: its boot clock is carried forward on the
// monotonic clock (stamp.at), so that a claimed group's attempts read the boot clock (a
// system call) once, not once each, while each deadline timer is armed from the monotonic
// clock as it is now.
func (lk *leaseKeeper) register(a *attempt, sent, answered stamp) {
	l := &a.lease
	l.mu.Lock()
	l.until = sent.add(lk.times.held())
	l.timer = lk.clock.AfterFunc(answered.at(lk.clock.Now()).until(l.until), func() { lk.expire(a) })
	l.mu.Unlock()
	lk.mu.Lock()
	lk.held[a] = struct{}{}
	lk.mu.Unlock()
}

// unregister stops keeping a's lease.
func (lk *leaseKeeper) unregister(a *attempt) {
	lk.mu.Lock()
	delete(lk.held, a)
	lk.mu.Unlock()
	a.lease.mu.Lock()
	a.lease.done = true
	if a.lease.timer != nil {
		a.lease.timer.Stop()
	}
	a.lease.mu.Unlock()
}

// expire runs at a's deadline: unless an extension moved it meanwhile, a running attempt
// loses its lease and its handler is cancelled. An attempt whose handler returned keeps its
// message in progress while its commit is retried; the commit is fenced, so it lands only if
// nobody took the key over.
func (lk *leaseKeeper) expire(a *attempt) {
	l := &a.lease
	l.mu.Lock()
	if l.done || l.state != leaseHeld || l.settling {
		l.mu.Unlock()
		return
	}
	if left := lk.clock.Stamp().until(l.until); left > 0 {
		l.timer = lk.clock.AfterFunc(left, func() { lk.expire(a) })
		l.mu.Unlock()
		return
	}
	l.state = leaseLost
	l.mu.Unlock()
	lk.log.Warn("lease can no longer be known to hold (Postgres has not confirmed an extension in time); cancelling the attempt, which another worker may take over once its lease expires",
		"job_id", a.j.env.ID, "key", a.j.env.Key, "fence", a.fence, "lease", lk.times.lease)
	a.cancel(idempotency.ErrLeaseLost)
}

// lose records that Postgres no longer has a's fence running: another owner took the key
// over, or a's own commit landed (the commit's answer says which). A running handler is
// cancelled.
func (lk *leaseKeeper) lose(a *attempt) {
	l := &a.lease
	l.mu.Lock()
	if l.state != leaseHeld {
		l.mu.Unlock()
		return
	}
	l.state = leaseLost
	settling := l.settling
	l.mu.Unlock()
	if !settling {
		a.cancel(idempotency.ErrLeaseLost)
	}
}

// leave stops keeping the lease of an attempt whose handler ignores its timeout.
func (lk *leaseKeeper) leave(a *attempt) {
	a.lease.mu.Lock()
	if a.lease.state == leaseHeld {
		a.lease.state = leaseLeft
	}
	a.lease.mu.Unlock()
}

// settling marks a's handler as returned; it reports whether the lease is still held.
func (lk *leaseKeeper) settling(a *attempt) bool {
	a.lease.mu.Lock()
	defer a.lease.mu.Unlock()
	a.lease.settling = true
	return a.lease.state == leaseHeld
}

// drop stops keeping a's message in progress: a commit retried past its patience is given up.
func (lk *leaseKeeper) drop(a *attempt) {
	a.lease.mu.Lock()
	if a.lease.state == leaseHeld {
		a.lease.state = leaseLost
	}
	a.lease.mu.Unlock()
}

// extend moves a's deadline to until, if its lease is still held.
func (lk *leaseKeeper) extend(a *attempt, until stamp) {
	l := &a.lease
	l.mu.Lock()
	if l.state == leaseHeld && until.after(l.until) {
		l.until = until
	}
	l.mu.Unlock()
}

// holds reports whether a's lease is known to hold at now: not lost, left or dropped, and
// within its deadline.
func (lk *leaseKeeper) holds(a *attempt, now stamp) bool {
	a.lease.mu.Lock()
	defer a.lease.mu.Unlock()
	return a.lease.state == leaseHeld && now.before(a.lease.until)
}

// settlingUntil returns the latest deadline among the attempts whose handler returned and
// whose lease still holds: how long their commits may still land (ok false when there are
// none).
func (lk *leaseKeeper) settlingUntil(now stamp) (until stamp, ok bool) {
	lk.mu.Lock()
	as := make([]*attempt, 0, len(lk.held))
	for a := range lk.held {
		as = append(as, a)
	}
	lk.mu.Unlock()
	for _, a := range as {
		l := &a.lease
		l.mu.Lock()
		if l.settling && l.state == leaseHeld && now.before(l.until) && l.until.after(until) {
			until, ok = l.until, true
		}
		l.mu.Unlock()
	}
	return until, ok
}

// count is the number of attempts whose leases are registered: running, or settling.
func (lk *leaseKeeper) count() int {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return len(lk.held)
}

// keeping returns the attempts whose leases are to be kept now: held, and either within
// their deadline or settling. An attempt found past its deadline (after a suspend, its timer
// late) loses its lease at once.
func (lk *leaseKeeper) keeping(now stamp) []*attempt {
	lk.mu.Lock()
	as := make([]*attempt, 0, len(lk.held))
	for a := range lk.held {
		as = append(as, a)
	}
	lk.mu.Unlock()
	out := as[:0]
	for _, a := range as {
		l := &a.lease
		l.mu.Lock()
		keep := l.state == leaseHeld && (l.settling || now.before(l.until))
		late := l.state == leaseHeld && !keep
		l.mu.Unlock()
		if keep {
			out = append(out, a)
		} else if late {
			lk.expire(a)
		}
	}
	return out
}

// run keeps leases until ctx ends: every h, and within a fraction of h after a failed
// extension, so that a short Postgres outage is bridged (design rule 29).
func (lk *leaseKeeper) run(ctx context.Context) {
	wait := lk.times.every
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if lk.beat(ctx) {
			wait = lk.times.every
		} else {
			wait = lk.times.retry()
		}
	}
}

// beat extends the kept leases once. It tells JetStream first (a slow ledger must not let
// AckWait pass and cause a pointless redelivery), then Postgres, and moves each confirmed
// attempt's deadline to the send time plus held. It reports false when Postgres failed.
func (lk *leaseKeeper) beat(ctx context.Context) bool {
	as := lk.keeping(lk.clock.Stamp())
	if len(as) == 0 {
		return true
	}
	leases := make([]idempotency.Lease, len(as))
	for i, a := range as {
		leases[i] = a.ledgerLease()
		_ = a.j.msg.InProgress()
	}
	hctx, cancel := context.WithTimeout(ctx, lk.times.try())
	defer cancel()
	sent := lk.clock.Stamp()
	status, err := lk.ledger.Heartbeat(hctx, leases, lk.times.stored())
	lk.metrics.Ledger("heartbeat", sent.mono)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		if errors.Is(err, context.DeadlineExceeded) {
			// The connection may be dead without a word (a partition, a failover), and the
			// pool's other idle ones with it: the next try dials a fresh one.
			lk.ledger.DropIdle(ctx)
		}
		lk.log.Warn("extending leases failed; trying again soon", "err", err, "attempts", len(as), "retry_in", lk.times.retry())
		return false
	}
	for i, a := range as {
		switch status[i] {
		case idempotency.LeaseExtended:
			lk.extend(a, sent.add(lk.times.held()))
		case idempotency.LeaseLost:
			lk.lose(a)
		}
		// LeaseBusy: its row is held by another statement (its own handler's transaction
		// committing, most often); its deadline stands until an extension lands.
	}
	return true
}
