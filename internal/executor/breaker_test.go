package executor_test

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/executor/executortest"
)

// breakerWaitLimit bounds waits for a signal that must come; reaching it fails the test.
const breakerWaitLimit = 10 * time.Second

var breakerStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type breakerBundle struct {
	clock   *executortest.Clock
	breaker *executor.Breaker
	cfg     executor.BreakerConfig // effective, defaults filled in
}

// setupBreaker returns a fresh breaker on a fresh fake clock. Zero fields of cfg take these
// test defaults: MinCalls 4, FailureRate 0.5, Window 10s, OpenFor 30s, HalfOpenCalls 3.
func setupBreaker(t *testing.T, cfg executor.BreakerConfig) *breakerBundle {
	t.Helper()
	clock := executortest.NewClock(breakerStart)
	if cfg.MinCalls == 0 {
		cfg.MinCalls = 4
	}
	if cfg.Window == 0 {
		cfg.Window = 10 * time.Second
	}
	cfg.Clock = clock
	b := executor.NewBreaker(cfg)
	return &breakerBundle{clock: clock, breaker: b, cfg: cfg.Defaults()}
}

// record admits one permit per outcome (the breaker must admit at once) and settles each.
func (bb *breakerBundle) record(t *testing.T, failures ...bool) {
	t.Helper()
	n, err := bb.breaker.Admit(t.Context(), len(failures))
	require.NoError(t, err)
	require.Equal(t, len(failures), n)
	for _, f := range failures {
		bb.breaker.Record(f)
	}
}

// trip opens a closed breaker with MinCalls failures.
func (bb *breakerBundle) trip(t *testing.T) {
	t.Helper()
	bb.record(t, repeatOutcome(true, bb.cfg.MinCalls)...)
	require.Equal(t, executor.BreakerOpen, bb.breaker.State())
}

// halfOpen trips the breaker and lets OpenFor pass.
func (bb *breakerBundle) halfOpen(t *testing.T) {
	t.Helper()
	bb.trip(t)
	bb.clock.Advance(bb.cfg.OpenFor)
	require.Equal(t, executor.BreakerHalfOpen, bb.breaker.State())
}

func repeatOutcome(failure bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = failure
	}
	return out
}

type breakerAdmitted struct {
	n   int
	err error
}

// breakerAdmitAsync starts Admit in a goroutine and returns the channel its answer arrives on.
func breakerAdmitAsync(ctx context.Context, b *executor.Breaker, max int) <-chan breakerAdmitted {
	ch := make(chan breakerAdmitted, 1)
	go func() {
		n, err := b.Admit(ctx, max)
		ch <- breakerAdmitted{n, err}
	}()
	return ch
}

func receiveAdmitted(t *testing.T, ch <-chan breakerAdmitted) breakerAdmitted {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(breakerWaitLimit):
		t.Fatal("Admit did not return")
		return breakerAdmitted{}
	}
}

func requireWaiting(t *testing.T, ch <-chan breakerAdmitted) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("Admit returned %+v; want it waiting", a)
	default:
	}
}

// awaitTimer waits until a goroutine has armed a timer on clock (an Admit waiting while open).
func awaitTimer(t *testing.T, clock *executortest.Clock) {
	t.Helper()
	select {
	case <-clock.TimerCreated():
	case <-time.After(breakerWaitLimit):
		t.Fatal("no timer was created")
	}
}

func TestBreakerConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg := executor.BreakerConfig{}.Defaults()
	require.Equal(t, 30*time.Second, cfg.Window)
	require.Equal(t, 20, cfg.MinCalls)
	require.InDelta(t, 0.5, cfg.FailureRate, 0)
	require.Equal(t, 30*time.Second, cfg.OpenFor)
	require.Equal(t, 3, cfg.HalfOpenCalls)
	require.Equal(t, executor.SystemClock, cfg.Clock)

	set := executor.BreakerConfig{Window: time.Minute, MinCalls: 5, FailureRate: 0.25, OpenFor: time.Second, HalfOpenCalls: 1}
	require.Equal(t, set.Window, set.Defaults().Window, "set fields are kept")
	require.Equal(t, set.MinCalls, set.Defaults().MinCalls)
	require.InDelta(t, set.FailureRate, set.Defaults().FailureRate, 0)
	require.Equal(t, set.OpenFor, set.Defaults().OpenFor)
	require.Equal(t, set.HalfOpenCalls, set.Defaults().HalfOpenCalls)
}

func TestBreakerStateString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "closed", executor.BreakerClosed.String())
	require.Equal(t, "open", executor.BreakerOpen.String())
	require.Equal(t, "half_open", executor.BreakerHalfOpen.String())
	require.Equal(t, "BreakerState(7)", executor.BreakerState(7).String())
}

func TestBreakerClosedAdmitsAtOnce(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{})
	n, err := bb.breaker.Admit(t.Context(), 50)
	require.NoError(t, err)
	require.Equal(t, 50, n)
	bb.breaker.Release(50) // no-op while closed
	n, err = bb.breaker.Admit(t.Context(), 0)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, executor.BreakerSnapshot{State: executor.BreakerClosed}, bb.breaker.Snapshot())
	require.True(t, bb.breaker.OpenUntil().IsZero())
}

func TestBreakerOneFailureNeverTrips(t *testing.T) {
	t.Parallel()
	// Even with the lowest possible rate, one failure is below the default MinCalls.
	bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 20, FailureRate: 0.01})
	bb.record(t, true)
	s := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerClosed, s.State)
	require.Equal(t, 1, s.Calls)
	require.Equal(t, 1, s.Failures)
}

func TestBreakerTripThresholds(t *testing.T) {
	t.Parallel()
	const (
		S = false
		F = true
	)
	tests := []struct {
		name     string
		minCalls int
		rate     float64
		outcomes []bool
		want     executor.BreakerState
	}{
		{"all failures below min calls", 4, 0.5, []bool{F, F, F}, executor.BreakerClosed},
		{"rate reached at min calls", 4, 0.5, []bool{S, S, F, F}, executor.BreakerOpen},
		{"rate just below at min calls", 4, 0.5, []bool{S, S, S, F}, executor.BreakerClosed},
		{"rate was high only before min calls", 6, 0.6, []bool{F, F, F, S, S, S}, executor.BreakerClosed},
		{"rate reached after min calls", 4, 0.5, []bool{S, S, S, S, F, F, F, F}, executor.BreakerOpen},
		{"rate 1 needs every call failed", 4, 1, []bool{S, F, F, F, F, F, F, F}, executor.BreakerClosed},
		{"rate 1 with every call failed", 4, 1, []bool{F, F, F, F}, executor.BreakerOpen},
		{"exact decimal rate", 30, 0.1, append(repeatOutcome(S, 27), F, F, F), executor.BreakerOpen},
		{"one below exact decimal rate", 30, 0.1, append(repeatOutcome(S, 28), F, F), executor.BreakerClosed},
		{"no failures", 4, 0.01, repeatOutcome(S, 40), executor.BreakerClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			bb := setupBreaker(t, executor.BreakerConfig{MinCalls: tt.minCalls, FailureRate: tt.rate})
			bb.record(t, tt.outcomes...)
			require.Equal(t, tt.want, bb.breaker.State())
		})
	}
}

func TestBreakerOpensUntilNowPlusOpenFor(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{})
	bb.clock.Advance(3 * time.Second)
	bb.trip(t)
	want := breakerStart.Add(3*time.Second + bb.cfg.OpenFor)
	require.Equal(t, want, bb.breaker.OpenUntil())
	s := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerSnapshot{State: executor.BreakerOpen, Calls: 4, Failures: 4, OpenUntil: want}, s)
}

func TestBreakerWindowAgesOut(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 4, Window: 10 * time.Second})
	bb.record(t, true, true, true)
	require.Equal(t, 3, bb.breaker.Snapshot().Failures)

	// A whole window later the failures no longer count: one more does not trip it.
	bb.clock.Advance(10 * time.Second)
	require.Zero(t, bb.breaker.Snapshot().Calls)
	bb.record(t, true)
	s := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerClosed, s.State)
	require.Equal(t, 1, s.Calls)
	require.Equal(t, 1, s.Failures)
}

func TestBreakerWindowSlides(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 4, Window: 10 * time.Second})
	bb.record(t, true, true) // bucket 0
	bb.clock.Advance(5 * time.Second)
	bb.record(t, false) // bucket 5
	bb.clock.Advance(4 * time.Second)
	s := bb.breaker.Snapshot() // bucket 9: all three still in the window
	require.Equal(t, 3, s.Calls)
	require.Equal(t, 2, s.Failures)

	bb.clock.Advance(time.Second) // bucket 10: bucket 0 has left the window
	s = bb.breaker.Snapshot()
	require.Equal(t, 1, s.Calls)
	require.Zero(t, s.Failures)

	// The ring reuses bucket 0's slot for bucket 10 without its old counts.
	bb.record(t, true, true)
	s = bb.breaker.Snapshot()
	require.Equal(t, 3, s.Calls)
	require.Equal(t, 2, s.Failures)
	require.Equal(t, executor.BreakerClosed, s.State, "3 calls are below MinCalls")
	bb.record(t, true)
	require.Equal(t, executor.BreakerOpen, bb.breaker.State(), "3 of 4 failed within the window")
}

func TestBreakerOpenWaitsThenHalfOpen(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{HalfOpenCalls: 3})
	bb.trip(t)

	got := breakerAdmitAsync(t.Context(), bb.breaker, 10)
	awaitTimer(t, bb.clock)
	requireWaiting(t, got)
	bb.clock.Advance(bb.cfg.OpenFor - time.Nanosecond)
	requireWaiting(t, got)
	require.Equal(t, executor.BreakerOpen, bb.breaker.State())

	bb.clock.Advance(time.Nanosecond)
	a := receiveAdmitted(t, got)
	require.NoError(t, a.err)
	require.Equal(t, 3, a.n, "half-open hands out at most HalfOpenCalls")
	s := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerHalfOpen, s.State)
	require.True(t, s.OpenUntil.IsZero())

	// Every trial is out: Admit waits until one comes back.
	got = breakerAdmitAsync(t.Context(), bb.breaker, 5)
	requireWaiting(t, got)
	bb.breaker.Release(1)
	a = receiveAdmitted(t, got)
	require.NoError(t, a.err)
	require.Equal(t, 1, a.n)
}

func TestBreakerHalfOpenHandsOutUpToMax(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{HalfOpenCalls: 3})
	bb.halfOpen(t)
	n, err := bb.breaker.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	n, err = bb.breaker.Admit(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Releasing more than the trials out cannot make more than HalfOpenCalls.
	bb.breaker.Release(10)
	n, err = bb.breaker.Admit(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, 3, n)
}

func TestBreakerHalfOpenTrialsSucceedCloses(t *testing.T) {
	t.Parallel()
	var changes []string
	bb := setupBreaker(t, executor.BreakerConfig{
		HalfOpenCalls:     3,
		OnStateChangeFunc: func(from, to executor.BreakerState) { changes = append(changes, from.String()+">"+to.String()) },
	})
	bb.halfOpen(t)
	n, err := bb.breaker.Admit(t.Context(), 3)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	// A waiter for a trial is woken by the close and gets its full max.
	got := breakerAdmitAsync(t.Context(), bb.breaker, 7)
	bb.breaker.Record(false)
	bb.breaker.Record(false)
	requireWaiting(t, got)
	require.Equal(t, executor.BreakerHalfOpen, bb.breaker.State())
	bb.breaker.Record(false)

	a := receiveAdmitted(t, got)
	require.NoError(t, a.err)
	require.Equal(t, 7, a.n)
	require.Equal(t, executor.BreakerSnapshot{State: executor.BreakerClosed}, bb.breaker.Snapshot(), "closed with an empty window")
	require.Equal(t, []string{"closed>open", "open>half_open", "half_open>closed"}, changes)

	// Closed again, it needs MinCalls fresh outcomes to open.
	bb.breaker.Record(true)
	require.Equal(t, executor.BreakerClosed, bb.breaker.State())
}

func TestBreakerHalfOpenTrialFailsReopens(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{HalfOpenCalls: 3})
	bb.halfOpen(t)
	n, err := bb.breaker.Admit(t.Context(), 3)
	require.NoError(t, err)
	require.Equal(t, 3, n)

	bb.clock.Advance(7 * time.Second)
	bb.breaker.Record(false)
	bb.breaker.Record(true)
	require.Equal(t, executor.BreakerOpen, bb.breaker.State())
	want := bb.clock.Now().Add(bb.cfg.OpenFor)
	require.Equal(t, want, bb.breaker.OpenUntil(), "a fresh OpenFor from the failure")

	// The last trial, settled while open, changes nothing either way.
	bb.breaker.Record(false)
	require.Equal(t, executor.BreakerOpen, bb.breaker.State())
	require.Equal(t, want, bb.breaker.OpenUntil())

	// Half-open again, with every trial available.
	bb.clock.Advance(bb.cfg.OpenFor)
	n, err = bb.breaker.Admit(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, 3, n)
}

func TestBreakerSettlesAfterTransition(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{MinCalls: 4, HalfOpenCalls: 2})
	// Ten permits admitted while closed; four failures open the breaker.
	n, err := bb.breaker.Admit(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	for range 4 {
		bb.breaker.Record(true)
	}
	require.Equal(t, executor.BreakerOpen, bb.breaker.State())
	openUntil := bb.breaker.OpenUntil()

	// Settled while open: nothing changes.
	bb.clock.Advance(time.Second)
	bb.breaker.Record(true)
	bb.breaker.Record(false)
	bb.breaker.Release(1)
	s := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerOpen, s.State)
	require.Equal(t, openUntil, s.OpenUntil)
	require.Equal(t, 4, s.Calls, "outcomes settled while open are not counted")

	// Half-open with three old permits still out: settled with no trial out, they change
	// nothing.
	bb.clock.Advance(bb.cfg.OpenFor)
	bb.breaker.Record(true)
	bb.breaker.Release(1)
	require.Equal(t, executor.BreakerHalfOpen, bb.breaker.State())
	n, err = bb.breaker.Admit(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	bb.breaker.Record(false) // the last old permit, taken for a trial
	bb.breaker.Record(false)
	require.Equal(t, executor.BreakerClosed, bb.breaker.State())
	bb.breaker.Record(true) // the other trial, settled once closed: counted in the new window
	s = bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerClosed, s.State)
	require.Equal(t, 1, s.Failures)
}

func TestBreakerAdmitCancelledWhileOpen(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{})
	bb.trip(t)

	// Already cancelled: returns at once, without a timer.
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	n, err := bb.breaker.Admit(done, 1)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, n)

	// Cancelled while waiting.
	ctx, cancel := context.WithCancel(t.Context())
	got := breakerAdmitAsync(ctx, bb.breaker, 1)
	awaitTimer(t, bb.clock)
	cancel()
	a := receiveAdmitted(t, got)
	require.ErrorIs(t, a.err, context.Canceled)
	require.Zero(t, a.n)

	// The cancelled Admit took no trial.
	bb.clock.Advance(bb.cfg.OpenFor)
	n, err = bb.breaker.Admit(t.Context(), 10)
	require.NoError(t, err)
	require.Equal(t, bb.cfg.HalfOpenCalls, n)
}

func TestBreakerAdmitCancelledWhileTrialsOut(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{HalfOpenCalls: 2})
	bb.halfOpen(t)
	n, err := bb.breaker.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	ctx, cancel := context.WithCancel(t.Context())
	got := breakerAdmitAsync(ctx, bb.breaker, 1)
	requireWaiting(t, got)
	cancel()
	a := receiveAdmitted(t, got)
	require.ErrorIs(t, a.err, context.Canceled)
	require.Zero(t, a.n)

	bb.breaker.Release(2)
	n, err = bb.breaker.Admit(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 2, n, "the cancelled Admit took no trial")
}

// Several waiters on an open breaker all wake when it goes half-open; each gets a trial.
func TestBreakerWakesEveryWaiter(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{HalfOpenCalls: 3})
	bb.trip(t)
	var waiters []<-chan breakerAdmitted
	for range 3 {
		waiters = append(waiters, breakerAdmitAsync(t.Context(), bb.breaker, 1))
	}
	for range waiters {
		awaitTimer(t, bb.clock)
	}
	bb.clock.Advance(bb.cfg.OpenFor)
	for _, w := range waiters {
		a := receiveAdmitted(t, w)
		require.NoError(t, a.err)
		require.Equal(t, 1, a.n)
	}

	// Three waiters for trials; releasing all three wakes all of them.
	waiters = waiters[:0]
	for range 3 {
		waiters = append(waiters, breakerAdmitAsync(t.Context(), bb.breaker, 1))
	}
	bb.breaker.Release(3)
	for _, w := range waiters {
		a := receiveAdmitted(t, w)
		require.NoError(t, a.err)
		require.Equal(t, 1, a.n)
	}
}

func TestBreakerOnStateChangeMayUseBreaker(t *testing.T) {
	t.Parallel()
	var (
		b      *executor.Breaker
		states []executor.BreakerState
	)
	bb := setupBreaker(t, executor.BreakerConfig{
		OnStateChangeFunc: func(_, to executor.BreakerState) {
			states = append(states, b.State()) // called outside the lock: no deadlock
			require.Equal(t, to, b.Snapshot().State)
		},
	})
	b = bb.breaker
	bb.trip(t)
	require.Equal(t, []executor.BreakerState{executor.BreakerOpen}, states)
}

func TestBreakerConcurrentUse(t *testing.T) {
	t.Parallel()
	var (
		changes []executor.BreakerState // serialized by the breaker; the race detector checks
		opens   int
	)
	bb := setupBreaker(t, executor.BreakerConfig{
		MinCalls: 4, Window: time.Second, OpenFor: time.Second, HalfOpenCalls: 2,
		OnStateChangeFunc: func(from, to executor.BreakerState) {
			want := executor.BreakerClosed
			if len(changes) > 0 {
				want = changes[len(changes)-1]
			}
			if from != want {
				t.Errorf("change from %s, want from %s", from, want)
			}
			changes = append(changes, to)
			if to == executor.BreakerOpen {
				opens++
			}
		},
	})

	// Whenever an Admit waits on the open breaker, move the clock past OpenFor.
	done := make(chan struct{})
	var advancer sync.WaitGroup
	advancer.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-bb.clock.TimerCreated():
				bb.clock.Advance(bb.cfg.OpenFor)
			}
		}
	})

	var workers sync.WaitGroup
	for g := range 8 {
		workers.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 42))
			for range 300 {
				n, err := bb.breaker.Admit(t.Context(), 1+rng.IntN(3))
				if err != nil {
					t.Error(err)
					return
				}
				for range n {
					switch rng.IntN(3) {
					case 0:
						bb.breaker.Record(true)
					case 1:
						bb.breaker.Record(false)
					default:
						bb.breaker.Release(1)
					}
				}
				_ = bb.breaker.Snapshot()
			}
		})
	}
	workers.Wait()
	close(done)
	advancer.Wait()

	require.Positive(t, opens, "the breaker opened at least once")
	// Every permit is settled: past OpenFor, a trial (or more) is free at once.
	bb.clock.Advance(bb.cfg.OpenFor)
	n, err := bb.breaker.Admit(t.Context(), 2)
	require.NoError(t, err)
	require.Positive(t, n)
	bb.breaker.Release(n)
}
