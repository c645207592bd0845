package executor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

// cutOff makes w's reads fail for LocalAfter (3 s on the fleet's clock).
func cutOff(t *testing.T, f *fleet, w *executor.FleetBreaker) {
	t.Helper()
	w.Reachable(executor.Shared{}, 0, false, errStoreDown)
	f.clock.Advance(3 * time.Second)
	w.Reachable(executor.Shared{}, 0, false, errStoreDown)
	require.True(t, w.Snapshot().CutOff)
}

// R1. A worker cut off while the FLEET's record was half-open (it opened nothing alone) must
// not, on rejoining, reopen a fleet that has since closed on its trials.
func TestFleetBreakerRejoinDoesNotReopenAClosedFleet(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.open(t)
	f.clock.Advance(2 * time.Second) // half-open
	a, b := f.workers[0], f.workers[1]
	n, err := a.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	cutOff(t, f, b) // b's copy: the fleet's half-open record, trials out; b made no decision
	f.store.mu.Lock()
	f.store.watchers = f.store.watchers[:1] // b's watch is down with its reads
	f.store.mu.Unlock()
	a.Record(false)
	a.Record(false)
	f.settle()
	b.Reachable(f.store.read()) // b's reads come back
	f.settle()
	require.Equal(t, executor.BreakerClosed, f.store.rec.State,
		"the fleet closed on its trials; b opened nothing alone, yet rejoining reopened it: %q", f.store.rec.Reason)
}

// R2. A worker holding the fleet's trial permits that is cut off for a moment and rejoins the
// same generation forgets its permits: their outcomes are dropped and the fleet stays
// half-open with the trials held until TrialTTL.
func TestFleetBreakerTrialsSurviveABriefCutOff(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.open(t)
	f.clock.Advance(2 * time.Second)
	a := f.workers[0]
	n, err := a.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	cutOff(t, f, a)
	a.Reachable(f.store.read()) // rejoins: the record is the same generation, same trials
	require.False(t, a.Snapshot().CutOff)
	a.Record(false)
	a.Record(false)
	f.settle()
	require.Equal(t, all(2, executor.BreakerClosed), f.states(),
		"both fleet trials succeeded, but their outcomes were dropped (trials=%d held in the record)", len(f.store.rec.Trials))
}

// R3. One failed change, then (an hour later) one more: the worker is cut off at once, though
// its changes have not "failed for 3 s running" (failWrite is never cleared by good reads).
func TestFleetBreakerOldWriteFailureDoesNotCutOffAtOnce(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	f.store.setDown(true)
	a.Reset() // one failed change (not retried)
	f.store.setDown(false)
	for range 3600 {
		f.clock.Advance(time.Second)
		a.Reachable(f.store.read()) // an hour of good probes
	}
	require.False(t, a.Snapshot().CutOff)
	f.store.setDown(true)
	record(t, a, fails(10)...) // opening proposed; its first change fails
	time.Sleep(300 * time.Millisecond)
	cut := a.Snapshot().CutOff
	f.store.setDown(false)
	f.settle()
	require.False(t, cut, "one failed change cut the worker off at once")
}

// R4. The probe's read found no record; before its answer is applied the watch delivers an
// opening (the record created): the late 'not found' closes the worker's breaker.
func TestFleetBreakerLateNotFoundDoesNotUndoAnOpening(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	opened := executor.Shared{State: executor.BreakerOpen, Gen: 1, Since: f.clock.Now(), Until: f.clock.Now().Add(time.Minute)}
	a.Apply(opened, 7)                            // watch: created open at rev 7
	a.Reachable(executor.Shared{}, 0, false, nil) // the probe's read, sent before the create
	require.Equal(t, executor.BreakerOpen, a.State(), "a stale 'not found' closed the breaker while the fleet is open")
}

// R5. An operator's reset while a worker is cut off with an opening of its own: on rejoining
// the worker reopens the fleet, and reset --wait counts it as having applied the reset.
func TestFleetBreakerRejoinOverridesAReset(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	f.store.setDown(true)
	record(t, a, fails(10)...)
	require.Eventually(t, func() bool {
		f.clock.Advance(100 * time.Millisecond)
		return a.State() == executor.BreakerOpen && a.Snapshot().CutOff
	}, 30*time.Second, 20*time.Millisecond)
	f.settle()
	f.store.setDown(false)
	f.clock.Advance(10 * time.Minute) // long after; a's local opening is stale (half-open, no traffic)
	_, _, _ = f.store.Update(t.Context(), func(cur executor.Shared, _ bool) (executor.Shared, bool) {
		return cur.Reset(f.clock.Now(), "operator"), true
	})
	a.Reachable(f.store.read())
	f.settle()
	require.Equal(t, executor.BreakerClosed, f.store.rec.State, "operator's reset overridden: %q", f.store.rec.Reason)
}
