package executor_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/executor/executortest"
)

// memStore is a shared record with compare-and-set, like the breakers bucket: each stored
// change reaches every breaker watching it, as the bucket's watch does.
type memStore struct {
	mu       sync.Mutex
	rec      executor.Shared
	rev      uint64
	found    bool
	down     bool
	watchers []*executor.FleetBreaker
}

var errStoreDown = errors.New("store unreachable")

func (m *memStore) Update(_ context.Context, fn func(executor.Shared, bool) (executor.Shared, bool)) (executor.Shared, uint64, error) {
	m.mu.Lock()
	if m.down {
		m.mu.Unlock()
		return executor.Shared{}, 0, errStoreDown
	}
	next, store := fn(m.rec, m.found)
	if !store {
		rec, rev := m.rec, m.rev
		m.mu.Unlock()
		return rec, rev, nil
	}
	m.rec, m.found = next, true
	m.rev++
	rec, rev, watchers := m.rec, m.rev, append([]*executor.FleetBreaker(nil), m.watchers...)
	m.mu.Unlock()
	for _, w := range watchers {
		w.Apply(rec, rev)
	}
	return rec, rev, nil
}

func (m *memStore) read() (executor.Shared, uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.down {
		return executor.Shared{}, 0, false, errStoreDown
	}
	return m.rec, m.rev, m.found, nil
}

func (m *memStore) setDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// fleet is a few workers' breakers of one kind sharing a store and a clock.
type fleet struct {
	clock   *executortest.Clock
	store   *memStore
	cfg     executor.BreakerConfig
	workers []*executor.FleetBreaker
}

func newFleet(t *testing.T, n int) *fleet {
	t.Helper()
	f := &fleet{
		clock: executortest.NewClock(breakerStart),
		store: &memStore{},
		cfg: executor.BreakerConfig{Window: 10 * time.Second, MinCalls: 10, FailureRate: 0.5,
			OpenFor: 2 * time.Second, HalfOpenCalls: 2},
	}
	f.cfg.Clock = f.clock
	for range n {
		f.join(t)
	}
	return f
}

// join starts a worker the way a worker process does: it reads the record, then watches it.
func (f *fleet) join(t *testing.T) *executor.FleetBreaker {
	t.Helper()
	b, err := executor.NewFleetBreaker(executor.FleetBreakerConfig{Breaker: f.cfg, Worker: string(rune('a' + len(f.workers))),
		Sync: f.store, TrialTTL: 5 * time.Second, LocalAfter: 3 * time.Second})
	require.NoError(t, err)
	f.store.mu.Lock()
	f.store.watchers = append(f.store.watchers, b)
	rec, rev, found := f.store.rec, f.store.rev, f.store.found
	f.store.mu.Unlock()
	if found {
		b.Apply(rec, rev)
	}
	f.workers = append(f.workers, b)
	t.Cleanup(b.Wait)
	return b
}

// exchange passes each worker's report to the others, as the report loop does.
func (f *fleet) exchange() {
	for _, from := range f.workers {
		gen, calls, failures := from.TakeReport()
		if calls == 0 {
			continue
		}
		for _, to := range f.workers {
			to.RecordRemote(from.Worker(), gen, calls, failures)
		}
	}
	f.settle()
}

// settle waits for the changes the workers proposed.
func (f *fleet) settle() {
	for _, w := range f.workers {
		w.Wait()
	}
}

func (f *fleet) states() []executor.BreakerState {
	out := make([]executor.BreakerState, len(f.workers))
	for i, w := range f.workers {
		out[i] = w.State()
	}
	return out
}

func all(n int, s executor.BreakerState) []executor.BreakerState {
	out := make([]executor.BreakerState, n)
	for i := range out {
		out[i] = s
	}
	return out
}

// record settles outcomes on w as attempts it admitted.
func record(t *testing.T, w *executor.FleetBreaker, failures ...bool) {
	t.Helper()
	n, err := w.Admit(t.Context(), len(failures))
	require.NoError(t, err)
	require.Equal(t, len(failures), n)
	for _, fl := range failures {
		w.Record(fl)
	}
}

func fails(n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = true
	}
	return out
}

// open trips the fleet's breaker from its workers' failures, none of which has min_calls.
func (f *fleet) open(t *testing.T) {
	t.Helper()
	each := (f.cfg.MinCalls + len(f.workers) - 1) / len(f.workers)
	for _, w := range f.workers {
		record(t, w, fails(each)...)
	}
	f.exchange()
	require.Equal(t, all(len(f.workers), executor.BreakerOpen), f.states())
}

func TestFleetBreakerCountsTheFleetsOutcomes(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	for _, w := range f.workers {
		record(t, w, fails(4)...) // 4 < min_calls: alone, no worker would open
	}
	f.settle()
	require.Equal(t, all(3, executor.BreakerClosed), f.states(), "nothing is heard yet")
	f.exchange()
	require.Equal(t, all(3, executor.BreakerOpen), f.states(), "12 failures in the fleet open it for everyone")
	snap := f.workers[2].Snapshot()
	require.True(t, snap.Fleet)
	require.Equal(t, 12, snap.Calls)
	require.Equal(t, 12, snap.Failures)
	require.Equal(t, breakerStart.Add(2*time.Second), snap.OpenUntil)
	require.Equal(t, uint64(1), f.store.rec.Gen, "one worker's compare-and-set won; the others saw it")
}

func TestFleetBreakerTrialsAreFleetWide(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	f.open(t)
	f.clock.Advance(2 * time.Second)
	require.Equal(t, all(3, executor.BreakerHalfOpen), f.states())

	a, b := f.workers[0], f.workers[1]
	n, err := a.Admit(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 2, n, "the fleet's half_open_calls, not each worker's")
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = b.Admit(ctx, 5)
	require.ErrorIs(t, err, context.DeadlineExceeded, "no trial is left for another worker")

	a.Record(false)
	a.Wait()
	require.Equal(t, all(3, executor.BreakerHalfOpen), f.states(), "one of two trials succeeded")
	a.Record(false)
	a.Wait()
	require.Equal(t, all(3, executor.BreakerClosed), f.states(), "both succeeded: closed for everyone")
	n, err = b.Admit(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	require.Zero(t, b.Snapshot().Calls, "closing empties every worker's window")
}

func TestFleetBreakerFailedTrialReopensForEveryone(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 3)
	f.open(t)
	f.clock.Advance(2 * time.Second)
	c := f.workers[2]
	n, err := c.Admit(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	c.Record(true)
	c.Wait()
	require.Equal(t, all(3, executor.BreakerOpen), f.states())
	require.Equal(t, f.clock.Now().Add(2*time.Second), f.workers[0].OpenUntil(), "a fresh open_for")
	require.Equal(t, "a trial call failed", f.store.rec.Reason)
}

func TestFleetBreakerJoinerStartsOpen(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.open(t)
	late := f.join(t)
	require.Equal(t, executor.BreakerOpen, late.State(), "a worker joining an outage starts open")
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err := late.Admit(ctx, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestFleetBreakerStaleReportsAreDropped(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	a, b := f.workers[0], f.workers[1]
	record(t, a, fails(6)...)
	gen, calls, failures := a.TakeReport()
	b.ResetBy("ada") // the record closes again: generation 1
	require.Equal(t, uint64(1), b.Shared().Gen)
	b.RecordRemote(a.Worker(), gen, calls, failures)
	require.Zero(t, b.Snapshot().Calls, "outcomes from before the reset are old news")
	require.Zero(t, a.Snapshot().Calls, "the reset emptied a's window too")
	require.Equal(t, "ada", f.store.rec.By)
}

func TestFleetBreakerLostTrialGoesToAnotherWorker(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.open(t)
	f.clock.Advance(2 * time.Second)
	a, b := f.workers[0], f.workers[1]
	n, err := a.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	// a dies holding both trials; after TrialTTL they are b's to take.
	f.clock.Advance(5 * time.Second)
	n, err = b.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	b.Record(false)
	b.Record(false)
	b.Wait()
	require.Equal(t, executor.BreakerClosed, b.State())
}

func TestFleetBreakerReleasedTrialGoesBack(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	f.open(t)
	f.clock.Advance(2 * time.Second)
	a, b := f.workers[0], f.workers[1]
	n, err := a.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	a.Release(1) // pulled one message only
	a.Wait()
	n, err = b.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

func TestFleetBreakerCutOffDecidesAloneThenRejoins(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	a := f.workers[0]
	f.store.setDown(true)
	record(t, a, fails(10)...)
	require.Eventually(t, func() bool { // the opening is retried in the background
		f.clock.Advance(100 * time.Millisecond)
		return a.State() == executor.BreakerOpen
	}, 30*time.Second, 20*time.Millisecond, "cut off for local_after, a worker opens on its own outcomes")
	require.True(t, a.Snapshot().CutOff)
	require.Equal(t, executor.BreakerClosed, f.workers[1].State(), "the others did not hear of it")

	f.store.setDown(false)
	a.Reachable(f.store.read())
	a.Wait()
	require.False(t, a.Snapshot().CutOff)
	require.Equal(t, executor.BreakerOpen, a.State(), "rejoined, its opening made alone is the fleet's")
	require.Equal(t, executor.BreakerOpen, f.workers[1].State())
}

func TestFleetBreakerCutOffNeverStaysClosedForever(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 1)
	a := f.workers[0]
	f.store.setDown(true)
	for range 7 { // the probe fails each second
		a.Reachable(f.store.read())
		f.clock.Advance(500 * time.Millisecond)
	}
	require.True(t, a.Snapshot().CutOff)
	record(t, a, fails(10)...)
	require.Equal(t, executor.BreakerOpen, a.State(), "cut off, its own failures open it at once")
	f.clock.Advance(2 * time.Second)
	n, err := a.Admit(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 2, n, "alone, it runs the trials itself")
	a.Record(false)
	a.Record(false)
	require.Equal(t, executor.BreakerClosed, a.State())
}

func TestOutageRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name              string
		failures, success int
		own               int
		want              bool
	}{
		{name: "open", failures: 4, own: 3, want: true},
		{name: "open on this job's failures alone", failures: 4, own: 4, want: true},
		{name: "closed at the rate, more failures than the job's", failures: 3, success: 3, own: 2, want: true},
		{name: "closed below the rate", failures: 2, success: 3, own: 1, want: false},
		{name: "closed, only the job's failures", failures: 3, own: 3, want: false},
		{name: "closed, empty window", own: 0, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 4, FailureRate: 0.5})
			for range tc.success {
				bb.record(t, false)
			}
			for range tc.failures {
				bb.record(t, true)
			}
			require.Equal(t, tc.want, bb.breaker.Outage(tc.own))
		})
	}
}

// At an outage's onset the window still holds the successes from before it; its recent part
// already shows the outage.
func TestOutageAtTheOnset(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 100, FailureRate: 0.5, Window: 10 * time.Second})
	for range 20 {
		bb.record(t, false)
	}
	bb.clock.Advance(5 * time.Second)
	bb.record(t, true, true)
	require.False(t, bb.breaker.Outage(2), "two failures, both the job's own")
	bb.record(t, true, true)
	require.True(t, bb.breaker.Outage(2), "4 of 24 in the window, but 4 of 4 in its recent part")
	bb.clock.Advance(3 * time.Second)
	require.False(t, bb.breaker.Outage(2), "the failures left the recent part; 4 of 24 is below the rate")
}

// The outcomes that opened the breaker still count after it opened, on every worker: a
// report that arrives after the opening belongs to the same epoch.
func TestFleetBreakerReportsAfterTheOpeningStillCount(t *testing.T) {
	t.Parallel()
	f := newFleet(t, 2)
	a, b := f.workers[0], f.workers[1]
	record(t, a, fails(10)...)
	a.Wait()
	require.Equal(t, all(2, executor.BreakerOpen), f.states(), "a's own failures opened it")
	f.exchange()
	require.Equal(t, 10, b.Snapshot().Calls, "a's report arrived after the opening and still counts")
	require.Equal(t, 10, b.Snapshot().Failures)
}
