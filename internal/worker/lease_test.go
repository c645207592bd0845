package worker

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

func TestLeaseTimes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ackWait, every, margin time.Duration
	}{
		{2 * time.Second, 667 * time.Millisecond, 250 * time.Millisecond},
		{30 * time.Second, 10 * time.Second, 3 * time.Second},
		{2 * time.Minute, 40 * time.Second, 5 * time.Second},
	} {
		lt := newLeaseTimes(tc.ackWait)
		require.Equal(t, tc.every, lt.every, tc.ackWait)
		require.Equal(t, tc.margin, lt.margin, tc.ackWait)
		require.Equal(t, tc.ackWait+tc.every, lt.held())
		require.Equal(t, lt.margin, lt.stored()-lt.held(), "Postgres holds the key m longer than the worker does")
	}
}

func cause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	default:
		return nil
	}
}

// A worker that cannot extend its lease cancels the attempt once the lease can no longer be
// known to hold, and stops telling JetStream it is in progress (design rule 29).
func TestLeaseDeadlineCancelsTheAttempt(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.beatFunc = func([]idempotency.Lease) ([]bool, error) { return nil, errors.New("connection refused") }
	lk := r.k.leases
	_, m, ctx := r.newAttempt("job-1", 1)
	held := lk.times.held()

	for elapsed := time.Duration(0); elapsed < held-lk.times.retry(); elapsed += lk.times.retry() {
		require.False(t, lk.beat(context.Background()), "Postgres is unreachable")
		r.clock.Advance(lk.times.retry())
		require.NoError(t, cause(*ctx), "cancelled before its lease could lapse, at %s", elapsed)
	}
	r.clock.Advance(held) // well past the deadline
	require.ErrorIs(t, cause(*ctx), idempotency.ErrLeaseLost)
	_, _, _, before := m.snapshot()
	require.Empty(t, lk.keeping(r.clock.Stamp()))
	lk.beat(context.Background())
	_, _, _, after := m.snapshot()
	require.Equal(t, before, after, "no InProgress once the lease is lost")
}

// A Postgres blip shorter than the lease ends with the lease extended and the attempt running.
func TestLeaseBridgesABlipShorterThanTheLease(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	lk := r.k.leases
	a, _, ctx := r.newAttempt("job-1", 1)
	down := true
	r.ledger.beatFunc = func(ls []idempotency.Lease) ([]bool, error) {
		if down {
			return nil, errors.New("connection refused")
		}
		return []bool{true}, nil
	}
	// The worst case: the last extension was a whole interval before the blip began.
	r.clock.Advance(lk.times.every)
	blip := lk.times.lease - 2*lk.times.retry()
	for elapsed := time.Duration(0); elapsed < blip; elapsed += lk.times.retry() {
		lk.beat(context.Background())
		r.clock.Advance(lk.times.retry())
	}
	down = false
	require.True(t, lk.beat(context.Background()))
	require.NoError(t, cause(*ctx), "cancelled by a blip of %s, shorter than the lease %s", blip, lk.times.lease)
	r.clock.Advance(lk.times.held() - time.Millisecond)
	require.NoError(t, cause(*ctx))
	require.Contains(t, lk.keeping(r.clock.Stamp()), a)
}

// An attempt whose handler returned keeps its message in progress past its deadline while
// its commit is retried; its (fenced) commit decides.
func TestLeaseKeepsASettlingAttemptInProgress(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.beatFunc = func([]idempotency.Lease) ([]bool, error) { return nil, errors.New("connection refused") }
	lk := r.k.leases
	a, m, ctx := r.newAttempt("job-1", 1)
	require.True(t, lk.settling(a))
	r.clock.Advance(3 * lk.times.held())
	require.NoError(t, cause(*ctx))
	_, _, _, before := m.snapshot()
	lk.beat(context.Background())
	_, _, _, after := m.snapshot()
	require.Equal(t, before+1, after, "still in progress")
	lk.drop(a)
	require.Empty(t, lk.keeping(r.clock.Stamp()))
}

// Postgres saying the fence moved on cancels the attempt at once.
func TestLeaseFenceMovedOnCancelsTheAttempt(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.beatFunc = func([]idempotency.Lease) ([]bool, error) { return []bool{false}, nil }
	lk := r.k.leases
	_, _, ctx := r.newAttempt("job-1", 1)
	require.True(t, lk.beat(context.Background()))
	require.ErrorIs(t, cause(*ctx), idempotency.ErrLeaseLost)
	require.Empty(t, lk.keeping(r.clock.Stamp()))
}

// An attempt whose handler ignores its timeout is left to lapse, and never extended again.
func TestLeaseLeavesAnOverrunningAttempt(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	lk := r.k.leases
	a, _, _ := r.newAttempt("job-1", 1)
	lk.leave(a)
	require.Empty(t, lk.keeping(r.clock.Stamp()))
	require.True(t, lk.beat(context.Background()))
	r.ledger.mu.Lock()
	beats := r.ledger.beats
	r.ledger.mu.Unlock()
	require.Zero(t, beats, "nothing to extend")
}

// A process woken after being frozen past its lease stops before its next call even when its
// deadline timer has not run yet: CheckLease judges the deadline at the moment of the call.
func TestCheckLeaseJudgesTheDeadlineWhenCalled(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	m := &fakeMsg{}
	j := &job{msg: m, env: queue.Envelope{ID: "job-1", Kind: "charge", Key: "job-1"}}
	r.k.w.gate.add(1)
	a, ctx := r.k.newAttempt(j, idempotency.ClaimResult{Status: idempotency.Claimed, Fence: 4, Attempts: 1}, nil)
	r.k.leases.register(a, r.clock.Stamp(), r.clock.Stamp())
	require.NoError(t, CheckLease(ctx))
	require.Equal(t, "w1", IDFrom(ctx))

	r.clock.Set(r.clock.Now().Add(r.k.leases.times.held() + time.Second)) // frozen: no timer ran
	require.NoError(t, ctx.Err(), "nothing cancelled the context yet")
	require.ErrorIs(t, CheckLease(ctx), idempotency.ErrLeaseLost)
	require.ErrorIs(t, context.Cause(ctx), idempotency.ErrLeaseLost, "and now it is cancelled")
	require.NoError(t, CheckLease(context.Background()), "outside an attempt")
	a.unhold()
}

// A machine suspended past the lease (its monotonic clock stopped, Postgres's did not) knows at
// once on waking that its lease is gone, before any timer runs.
func TestLeaseLostAfterASuspend(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	m := &fakeMsg{}
	j := &job{msg: m, env: queue.Envelope{ID: "job-1", Kind: "charge", Key: "job-1"}}
	r.k.w.gate.add(1)
	a, ctx := r.k.newAttempt(j, idempotency.ClaimResult{Status: idempotency.Claimed, Fence: 4, Attempts: 1}, nil)
	r.k.leases.register(a, r.clock.Stamp(), r.clock.Stamp())
	r.clock.Suspend(r.k.leases.times.held() + time.Second)
	require.NoError(t, ctx.Err())
	require.ErrorIs(t, CheckLease(ctx), idempotency.ErrLeaseLost)

	// The heartbeat loop, the first to run after waking, drops it too.
	b, _, bctx := r.newAttempt("job-2", 1)
	r.clock.Suspend(r.k.leases.times.held() + time.Second)
	require.NotContains(t, r.k.leases.keeping(r.clock.Stamp()), b)
	require.ErrorIs(t, context.Cause(*bctx), idempotency.ErrLeaseLost)
	a.unhold()
}

// A lease's deadline timer is armed from the monotonic clock as it is at registration, however
// long ago the stamp read after the claim was (a long group): the timer fires at the deadline,
// not late by the time since that stamp; the boot clock is carried forward from the stamp, not
// read again (a suspend in between is the dispatcher's to see:
// TestSuspendDuringASoloMarkIsSeenAtRegistration).
func TestRegisterArmsTheDeadlineFromTheClockNow(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	sent := r.clock.Stamp()
	answered := r.clock.Stamp()
	r.clock.Set(r.clock.Now().Add(2 * time.Second)) // registered two seconds after the answer
	a := &attempt{j: &job{msg: &fakeMsg{}, env: queue.Envelope{ID: "job-1", Kind: "charge", Key: "job-1"}}, fence: 1, cancel: func(error) {}}
	r.k.leases.register(a, sent, answered)
	defer r.k.leases.unregister(a)
	call := a.lease.timer.(*fakeCall)
	require.Equal(t, sent.mono.Add(r.k.leases.times.held()), call.at, "armed for the deadline itself")

	s := stamp{mono: fakeEpoch, boot: time.Hour}
	require.Equal(t, stamp{mono: fakeEpoch.Add(time.Second), boot: time.Hour + time.Second}, s.at(fakeEpoch.Add(time.Second)))
	require.Equal(t, s, s.at(fakeEpoch.Add(-time.Second)), "never carried backwards")
}

// A suspend while a solo turn's mark is written (a round trip to Postgres between the claim's
// answer and the attempt's registration) is seen when the lease is registered: its deadline
// timer is due at once, so the attempt is cancelled with ErrLeaseLost before or as its handler
// starts, before anyone can take the job over, not a heartbeat later (found by review: the
// boot clock was carried forward from before the mark).
func TestSuspendDuringASoloMarkIsSeenAtRegistration(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{Concurrency: 1, MaxAttempts: 3})
	r.k.ledger = claimingLedger{r.ledger}
	r.admitOne(t)
	var calls atomic.Int32
	causes := make(chan error, 1)
	r.k.kind.Handler = func(ctx context.Context, _ Attempt) ([]byte, error) {
		calls.Add(1)
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return nil, ctx.Err()
	}
	j := &job{msg: &fakeMsg{}, env: queue.Envelope{ID: "job-1", Kind: "charge", Key: "job-1", Payload: []byte(`{}`)}, delivered: 1, seq: 1}
	r.k.w.gate.add(1)
	turn := &soloTurn{released: make(chan struct{}), mark: func(context.Context) error {
		r.clock.Suspend(r.k.leases.times.held() + time.Second) // the machine sleeps while the mark is written
		return nil
	}}
	started, err := r.k.claimAndDispatch(context.Background(), []*job{j}, false, turn)
	require.NoError(t, err)
	require.Equal(t, 1, started)
	r.clock.Advance(0) // runs the timers already due, and only those
	done := make(chan struct{})
	go func() { r.k.attempts.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the lease lapsed during the mark, but its deadline timer was armed for later: the handler runs on past the takeover point")
	}
	if calls.Load() > 0 {
		require.ErrorIs(t, <-causes, idempotency.ErrLeaseLost)
	}
}

// invalidSecondLedger claims every job but the second, which it cannot store (dead-lettered
// in the dispatch loop, between the others' starts).
type invalidSecondLedger struct{ *fakeLedger }

func (l invalidSecondLedger) Claim(_ context.Context, reqs []idempotency.ClaimRequest) ([]idempotency.ClaimResult, error) {
	out := make([]idempotency.ClaimResult, len(reqs))
	for i := range out {
		out[i] = idempotency.ClaimResult{Status: idempotency.Claimed, Fence: 1, Attempts: 1}
	}
	out[1] = idempotency.ClaimResult{Status: idempotency.Invalid, Reason: "key too long"}
	return out, nil
}

// suspendingQueue is a fake queue whose dead-letter copy takes as long as suspend says, on the
// boot clock: the machine sleeps while the copy is published.
type suspendingQueue struct {
	*fakeQueue
	clock   *fakeClock
	suspend time.Duration
}

func (q suspendingQueue) DeadLetter(ctx context.Context, env queue.Envelope, data []byte, h nats.Header, info queue.DeadInfo) error {
	q.clock.Suspend(q.suspend)
	return q.fakeQueue.DeadLetter(ctx, env, data, h, info)
}

// A suspend while the dispatch loop dead-letters one job of a group is seen when the next
// claimed job's lease is registered: the stamp read after the claim is read again after
// anything the loop did besides starting claimed jobs. (The job started before the copy had
// its timer armed before the suspend; the next heartbeat judges it, TestLeaseLostAfterASuspend.)
func TestSuspendDuringADeadLetterInTheGroupIsSeenAtRegistration(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{Concurrency: 3, MaxAttempts: 3})
	r.k.ledger = invalidSecondLedger{r.ledger}
	r.k.queue = suspendingQueue{fakeQueue: r.queue, clock: r.clock, suspend: r.k.leases.times.held() + time.Second}
	r.k.kind.Handler = func(ctx context.Context, _ Attempt) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	js := make([]*job, 3)
	for i := range js {
		id := fmt.Sprintf("job-%d", i)
		js[i] = &job{msg: &fakeMsg{}, env: queue.Envelope{ID: id, Kind: "charge", Key: id, Payload: []byte(`{}`)}, delivered: 1, seq: uint64(i + 1)}
		r.admitOne(t)
	}
	r.k.w.gate.add(len(js))
	started, err := r.k.claimAndDispatch(context.Background(), js, false, nil)
	require.NoError(t, err)
	require.Equal(t, 2, started)
	require.Len(t, r.queue.copies, 1, "the second job is dead-lettered in the loop")
	due := map[string]bool{}
	r.k.leases.mu.Lock()
	for a := range r.k.leases.held {
		a.lease.mu.Lock()
		due[a.j.env.ID] = !a.lease.timer.(*fakeCall).at.After(r.clock.Now())
		a.lease.mu.Unlock()
	}
	r.k.leases.mu.Unlock()
	require.Equal(t, map[string]bool{"job-0": false, "job-2": true}, due,
		"job-2 was registered after the suspend: its deadline timer is due at once")
	r.clock.Advance(r.k.leases.times.held() + time.Second) // every lease lapses; the handlers return
	r.k.attempts.Wait()
}
