package worker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/executor/executortest"
	"github.com/levee-dev/levee/internal/idempotency"
)

// admitOne admits one message as the pull loop does, returning whether the breaker was
// half-open (its permit a trial).
func (r *rig) admitOne(t *testing.T) bool {
	t.Helper()
	n, trial, err := r.k.pipeline.AdmitTrial(context.Background(), 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	r.k.pipeline.Pulled(n, 1, trial)
	return trial
}

// givenBack checks that a's job was not called, its key given back without counting the
// attempt, and its message handed back after delay.
func givenBack(t *testing.T, r *rig, calls *atomic.Int32, m *fakeMsg, delay time.Duration, inFlight int) {
	t.Helper()
	require.Zero(t, calls.Load(), "the job held ahead was not called")
	fin := r.ledger.finishCalls()
	require.Len(t, fin, 1)
	require.Equal(t, idempotency.StateRetrying, fin[0][0].State)
	require.True(t, fin[0][0].Release, "the key is given back, the attempt not counted")
	require.Empty(t, fin[0][0].Attempt, "no attempt row: nothing ran")
	_, naks, _, _ := m.snapshot()
	require.Len(t, naks, 1)
	require.InDelta(t, delay.Seconds(), naks[0].Seconds(), 0.5)
	require.Zero(t, r.k.pipeline.Held(), "its reservation is released")
	require.Equal(t, inFlight, r.k.pipeline.InFlight(), "its slot, if it took one, is released")
}

// A job claimed ahead whose slot stays taken (the one slot held by a handler that ignores its
// timeout, design rule 21) goes back to the stream after slotWait instead of waiting with its
// lease kept (found by review).
func TestSlotWaitIsBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{Concurrency: 1})
	calls := new(atomic.Int32)
	r.k.kind.Handler = func(context.Context, Attempt) ([]byte, error) { calls.Add(1); return nil, nil }
	require.True(t, r.k.pipeline.TryAcquire(), "the stuck handler's slot")
	r.admitOne(t)
	a, m, ctx := r.newAttempt("job-1", 1)
	start := time.Now()
	r.k.run(*ctx, a)
	require.GreaterOrEqual(t, time.Since(start), slotWait)
	givenBack(t, r, calls, m, 0, 1) // the stuck handler's slot only
}

// A job held ahead is not called once the kind is paused, nor once the worker began to shut
// down: it goes back to the stream (found by review).
func TestSlotGivesBackWhenPausedOrStopping(t *testing.T) {
	t.Parallel()
	for _, tc := range []string{"paused", "stopping"} {
		t.Run(tc, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, executor.Policy{Concurrency: 2})
			calls := new(atomic.Int32)
			r.k.kind.Handler = func(context.Context, Attempt) ([]byte, error) { calls.Add(1); return nil, nil }
			r.admitOne(t)
			if tc == "paused" {
				r.k.pause.set(true)
			} else {
				run, stop := context.WithCancel(context.Background())
				stop()
				r.k.runCtx = run
			}
			a, m, ctx := r.newAttempt("job-1", 1)
			r.k.run(*ctx, a)
			givenBack(t, r, calls, m, 0, 0)
		})
	}
}

// openedRig is a rig whose kind has one message admitted while its breaker was closed (one
// trial when half-open, open for 10 s), and whose breaker a failed call has opened since.
func openedRig(t *testing.T) (*rig, *executortest.Clock, *atomic.Int32) {
	t.Helper()
	clock := executortest.NewClock(time.Now())
	r := newRig(t, executor.Policy{Concurrency: 2, Clock: clock,
		Breaker: executor.BreakerConfig{MinCalls: 1, FailureRate: 0.5, OpenFor: 10 * time.Second, HalfOpenCalls: 1}})
	calls := new(atomic.Int32)
	r.k.kind.Handler = func(context.Context, Attempt) ([]byte, error) { calls.Add(1); return nil, nil }
	require.False(t, r.admitOne(t), "admitted while closed")
	n, err := r.k.pipeline.Admit(context.Background(), 1)
	require.NoError(t, err)
	r.k.pipeline.Pulled(n, 1, false)
	require.True(t, r.k.pipeline.TryAcquire())
	r.k.pipeline.Finish(executor.Verdict{Class: executor.Retry, Err: context.DeadlineExceeded}, false)
	require.Equal(t, executor.BreakerOpen, r.k.pipeline.Breaker().State())
	return r, clock, calls
}

// A job admitted while the breaker was closed is not called once the breaker has opened or
// turned half-open: only trial permits call then, and its permit must not settle a trial
// (found by review). It waits in the stream for the breaker's open time.
func TestSlotGivesBackWhenTheBreakerChanged(t *testing.T) {
	t.Parallel()
	r, clock, calls := openedRig(t)

	a, m, ctx := r.newAttempt("job-1", 1)
	r.k.run(*ctx, a)
	givenBack(t, r, calls, m, 10*time.Second, 0)

	// Half-open: the trial permit is still there for a message admitted now.
	clock.Advance(10 * time.Second)
	require.Equal(t, executor.BreakerHalfOpen, r.k.pipeline.Breaker().State())
	require.True(t, r.admitOne(t), "a trial")
}

// ... and one admitted while closed that reaches its slot half-open goes back too, leaving
// the trial to a message admitted as one.
func TestSlotHalfOpenCallsOnlyTrials(t *testing.T) {
	t.Parallel()
	r, clock, calls := openedRig(t)
	clock.Advance(10 * time.Second)
	require.Equal(t, executor.BreakerHalfOpen, r.k.pipeline.Breaker().State())

	a, m, ctx := r.newAttempt("job-1", 1)
	r.k.run(*ctx, a)
	givenBack(t, r, calls, m, 0, 0)
	require.True(t, r.admitOne(t), "the one trial permit is still free")
}

// A job admitted while closed and given back while the breaker is half-open (here: the kind
// was paused) frees no trial: the one trial handed out is still out (found by review).
func TestSlotGiveBackFreesNoTrial(t *testing.T) {
	t.Parallel()
	r, clock, calls := openedRig(t)
	clock.Advance(10 * time.Second)
	require.Equal(t, executor.BreakerHalfOpen, r.k.pipeline.Breaker().State())
	require.True(t, r.admitOne(t), "the one trial, out")

	r.k.pause.set(true)
	a, m, ctx := r.newAttempt("job-1", 1)
	r.k.run(*ctx, a)
	_, naks, _, _ := m.snapshot()
	require.Len(t, naks, 1, "handed back")
	require.Zero(t, calls.Load())
	ctx2, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, _, err := r.k.pipeline.AdmitTrial(ctx2, 1)
	require.ErrorIs(t, err, context.DeadlineExceeded, "no second trial while the first is out")
}
