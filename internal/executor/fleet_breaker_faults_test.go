package executor_test

import (
	"context"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

// A NATS outage cuts every worker off; the downstream is failing too, so each opens its
// local breaker. When NATS comes back they rejoin, writing their opening into the shared
// record. Later the fleet closes and the downstream fails again: it must open again (found by
// review: a stale record of the opening proposed alone kept it closed forever).
func TestFleetBreakerReopensAfterRejoining(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.store.setDown(true)
	for _, w := range f.workers {
		record(t, w, fails(10)...)
	}
	require.Eventually(t, func() bool {
		f.clock.Advance(100 * time.Millisecond)
		return f.workers[0].State() == executor.BreakerOpen && f.workers[1].State() == executor.BreakerOpen
	}, 30*time.Second, 20*time.Millisecond, "cut off, each opens alone")
	f.settle()

	f.store.setDown(false)
	for _, w := range f.workers {
		w.Reachable(f.store.read())
	}
	f.settle()
	require.Equal(t, all(2, executor.BreakerOpen), f.states(), "rejoined: the openings made alone are the fleet's")

	// The trials succeed and close it; then the downstream fails again: 20 more failures in
	// the fleet's window must open it again (the opening of the local generation is old news).
	f.clock.Advance(2 * time.Second)
	a := f.workers[0]
	n, err := a.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	a.Record(false)
	a.Record(false)
	a.Wait()
	require.Equal(t, all(2, executor.BreakerClosed), f.states())
	for _, w := range f.workers {
		record(t, w, fails(10)...)
	}
	f.exchange()
	require.Equal(t, all(2, executor.BreakerOpen), f.states(),
		"20 of 20 calls failed with min_calls 10: the fleet's breaker must open (it stays closed forever)")
}

// roStore is the breakers bucket when JetStream refuses writes but still answers reads (a
// stream without quorum serving direct gets, storage or account limits reached): an Update
// that would store fails, a read succeeds.
type roStore struct {
	m        *memStore
	writable *atomic.Bool
}

func (s roStore) Update(ctx context.Context, fn func(executor.Shared, bool) (executor.Shared, bool)) (executor.Shared, uint64, error) {
	if s.writable.Load() {
		return s.m.Update(ctx, fn)
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if _, store := fn(s.m.rec, s.m.found); store {
		return executor.Shared{}, 0, errStoreDown
	}
	return s.m.rec, s.m.rev, nil
}

// A worker that cannot change the record is cut off and opens alone; a successful read does
// not rejoin it to the closed shared record while it cannot write its opening there (found by
// review).
func TestFleetBreakerWritesFailingReadsWorkingStaysOpen(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 0)
	writable := new(atomic.Bool)
	b, err := executor.NewFleetBreaker(executor.FleetBreakerConfig{Breaker: f.cfg, Worker: "a",
		Sync: roStore{f.store, writable}, TrialTTL: 5 * time.Second, LocalAfter: 3 * time.Second})
	require.NoError(t, err)
	t.Cleanup(b.Wait)
	t.Cleanup(func() { writable.Store(true) }) // lets retrying proposals end (runs first)
	probe := func() { b.Reachable(f.store.read()) }

	record(t, b, fails(10)...)
	require.Eventually(t, func() bool {
		f.clock.Advance(100 * time.Millisecond)
		return b.State() == executor.BreakerOpen
	}, 30*time.Second, 20*time.Millisecond, "unable to change the record, it opens alone")
	b.Wait()
	require.True(t, b.Snapshot().CutOff)

	probe() // the next probe (within 1 s): the record is readable, still not writable
	b.Wait()
	require.Equal(t, executor.BreakerOpen, b.State(),
		"the worker still cannot write its opening: it must not take the closed record")
	require.True(t, b.Snapshot().CutOff)

	writable.Store(true)
	probe()
	b.Wait()
	require.False(t, b.Snapshot().CutOff, "its opening written, it rejoins")
	require.Equal(t, executor.BreakerOpen, b.State())
	require.Equal(t, executor.BreakerOpen, f.store.rec.State, "the fleet's record carries the opening")
}

// Reports arrive on a core-NATS subject; a report's counts are capped, so no sum of reports
// can overflow the window into negative counts that would keep real failures from opening it
// (found by review).
func TestFleetBreakerReportsCannotOverflowTheWindow(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	a.RecordRemote("intruder", 0, math.MaxInt/2+1, 0)
	a.RecordRemote("intruder", 0, math.MaxInt/2+1, math.MaxInt)
	snap := a.Snapshot()
	require.Positive(t, snap.Calls)
	require.LessOrEqual(t, snap.Failures, snap.Calls)
	require.LessOrEqual(t, snap.Calls, 200_000)
}

// One failed read, then an hour of good ones, then one more failure: not cut off (found by
// review: the first failure was never forgotten).
func TestFleetBreakerOneFailedReadLongAgoDoesNotCutOff(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	f.store.setDown(true)
	a.Reachable(f.store.read()) // one probe fails
	f.store.setDown(false)
	for range 3600 { // an hour of successful probes, the record unchanged
		f.clock.Advance(time.Second)
		a.Reachable(f.store.read())
	}
	f.store.setDown(true)
	a.Reachable(f.store.read()) // one probe fails again
	require.False(t, a.Snapshot().CutOff, "one failure after an hour of answers must not cut the worker off (LocalAfter is 3s)")
}

// One failed probe, and an hour later one failed compare-and-set while the downstream fails,
// must not leave the fleet's breaker closed for good (found by review).
func TestFleetBreakerTwoHiccupsDoNotLeaveItClosed(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	f.store.setDown(true)
	a.Reachable(f.store.read()) // hiccup 1: one probe fails
	f.store.setDown(false)
	for range 3600 {
		f.clock.Advance(time.Second)
		a.Reachable(f.store.read())
	}
	// The downstream fails; the opening's compare-and-set meets hiccup 2, and is retried.
	f.store.setDown(true)
	record(t, a, fails(10)...)
	require.False(t, a.Snapshot().CutOff, "one failure does not cut it off")
	f.store.setDown(false)
	a.Wait()
	a.Reachable(f.store.read()) // the next probe, a second later
	for range 5 {               // the downstream stays down for half a minute
		f.clock.Advance(5 * time.Second)
		if a.State() == executor.BreakerClosed {
			record(t, a, fails(10)...)
			a.Wait()
		}
		a.Reachable(f.store.read())
	}
	require.NotZero(t, f.store.rec.Gen, "the downstream failed every call for 25 s, yet the fleet's breaker never opened")
}
