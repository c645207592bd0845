package executor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/executor/executortest"
)

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := executor.Policy{}.Defaults()
	require.Equal(t, executor.Policy{
		MaxAttempts:  5,
		Timeout:      30 * time.Second,
		Backoff:      executor.DefaultBackoff,
		Concurrency:  10,
		MaxAhead:     executor.DefaultMaxAhead,
		OverrunGrace: 5 * time.Second,
		Clock:        executor.SystemClock,
		Breaker:      executor.BreakerConfig{Clock: executor.SystemClock}.Defaults(),
	}, p)

	set := executor.Policy{MaxAttempts: 2, Timeout: time.Second, Backoff: executor.Backoff{Base: time.Millisecond, Max: time.Second},
		Concurrency: 3, MaxAhead: 7, OverrunGrace: time.Millisecond, Clock: executor.SystemClock,
		Breaker: executor.BreakerConfig{Clock: executor.SystemClock}.Defaults()}
	require.Equal(t, set, set.Defaults(), "set fields are kept")
}

// Admission reserves places among the messages held (Concurrency, and none ahead until the
// handlers are seen to return fast); the bulkhead slot is taken only when a handler is about
// to be called.
func TestPipelineAdmitRelease(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 2})
	require.NoError(t, err)
	require.Equal(t, 2, p.Policy().Concurrency)
	require.Equal(t, 5, p.Policy().MaxAttempts, "zero fields take their defaults")
	n, err := p.Admit(t.Context(), 64)
	require.NoError(t, err)
	require.Equal(t, 2, n, "concurrency 2, none ahead yet")
	require.Equal(t, 2, p.Held())
	require.Equal(t, 0, p.InFlight(), "no handler called yet")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.Admit(ctx, 1)
	require.ErrorIs(t, err, context.Canceled, "admission waits only as long as its context")

	require.NoError(t, p.Acquire(t.Context()))
	require.NoError(t, p.Acquire(t.Context()))
	require.Equal(t, 2, p.InFlight())
	require.ErrorIs(t, p.Acquire(ctx), context.Canceled, "a third waits for a slot: the bulkhead bounds calls")
	p.Finish(executor.Verdict{Class: executor.Succeeded}, false)
	p.Finish(executor.Verdict{Class: executor.Succeeded}, false)
	require.Equal(t, 0, p.InFlight())
	require.Equal(t, 0, p.Held())

	n, err = p.Admit(t.Context(), 2)
	require.NoError(t, err)
	p.Release(n, false)
	require.Equal(t, 0, p.Held())
}

// The depth ahead follows how fast the handlers return: fast ones raise it window by window
// up to MaxAhead, a window without returns keeps it while no handler runs, slow ones bring it
// back to 0.
func TestPipelineDepthAheadAdapts(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(time.Unix(1_000_000, 0))
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 10, MaxAhead: 100, Clock: clock})
	require.NoError(t, err)
	// cycle admits what it may, then calls and finishes returns of them, taking d.
	cycle := func(returns int, d time.Duration) int {
		n, err := p.Admit(t.Context(), 1000)
		require.NoError(t, err)
		returns = min(returns, n)
		for range returns {
			require.NoError(t, p.Acquire(t.Context()))
			p.Finish(executor.Verdict{Class: executor.Succeeded}, false)
		}
		p.Release(n-returns, false)
		clock.Advance(d)
		return n
	}
	require.Equal(t, 0, p.Ahead())
	// Fast handlers bound by round trips: every 10ms, all that is held returns. A window
	// closes as soon as all that may be held has returned: 10 in 10ms, 1,000/s, 20 in the
	// 20ms the depth covers; then 30 in 10ms, 60; then 70, past MaxAhead.
	require.Equal(t, 10, cycle(1000, 10*time.Millisecond))
	require.Equal(t, 30, cycle(1000, 10*time.Millisecond))
	require.Equal(t, 20, p.Ahead())
	require.Equal(t, 70, cycle(1000, 10*time.Millisecond))
	require.Equal(t, 110, cycle(1000, 10*time.Millisecond))
	require.Equal(t, 100, p.Ahead(), "fast returns raise the depth to MaxAhead")
	// Returns slower than what is held: the window runs its 100ms.
	for range 9 {
		cycle(50, 10*time.Millisecond)
	}
	require.Equal(t, 100, p.Ahead(), "500 returns in 100ms: 5,000/s, 100 ahead")
	for range 9 {
		cycle(1000, 10*time.Millisecond)
	}
	// The kind goes idle: the window of its last returns closes (the depth becomes what they
	// justify over it), then windows without returns keep the depth.
	cycle(0, 100*time.Millisecond)
	cycle(0, 100*time.Millisecond)
	held := p.Policy().Concurrency + p.Ahead()
	require.Equal(t, held, cycle(0, time.Second))
	require.Equal(t, held, cycle(0, 0), "a window without returns keeps the depth")
	// Slow handlers: one return in 100ms.
	cycle(1, 100*time.Millisecond)
	require.Equal(t, 10, cycle(0, 0), "one return in a window (10/s, 0.2 in 20ms): nothing ahead")
	require.Equal(t, 0, p.Ahead())
}

func TestExecuteSuccess(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{})
	require.NoError(t, err)
	res, v := executor.Execute(t.Context(), p, nil, func(ctx context.Context) (string, error) {
		deadline, ok := ctx.Deadline()
		require.True(t, ok, "every attempt has a deadline")
		require.WithinDuration(t, time.Now().Add(30*time.Second), deadline, 5*time.Second)
		return "done", nil
	})
	require.Equal(t, executor.Succeeded, v.Class)
	require.NoError(t, v.Err)
	require.Equal(t, "done", res)
}

func TestExecuteClassifiesErrors(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{})
	require.NoError(t, err)
	errBad := errors.New("bad request")
	_, v := executor.Execute(t.Context(), p, nil, func(context.Context) (int, error) { return 0, executor.Permanent(errBad) })
	require.Equal(t, executor.Dead, v.Class)
	require.Equal(t, executor.ReasonPermanent, v.Reason)
	require.ErrorIs(t, v.Err, errBad)

	_, v = executor.Execute(t.Context(), p, nil, func(context.Context) (int, error) {
		return 0, executor.RetryAfter(7*time.Second, errors.New("429"))
	})
	require.Equal(t, executor.Retry, v.Class)
	require.Equal(t, 7*time.Second, v.RetryAfter)
}

func TestExecutePanicIsRetryable(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{})
	require.NoError(t, err)
	res, v := executor.Execute(t.Context(), p, nil, func(context.Context) (*int, error) {
		panic("nil map write in handler")
	})
	require.Nil(t, res)
	require.Equal(t, executor.Retry, v.Class)
	require.ErrorIs(t, v.Err, executor.ErrPanic)
	require.Contains(t, v.Err.Error(), "nil map write in handler")
	require.False(t, v.Timeout)
}

func TestExecuteTimeout(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{Timeout: 10 * time.Millisecond})
	require.NoError(t, err)
	_, v := executor.Execute(t.Context(), p, nil, func(ctx context.Context) (int, error) {
		<-ctx.Done()
		require.ErrorIs(t, context.Cause(ctx), executor.ErrAttemptTimeout, "the handler can tell our timeout from a shutdown")
		return 0, ctx.Err()
	})
	require.Equal(t, executor.Retry, v.Class)
	require.True(t, v.Timeout)
	require.ErrorIs(t, v.Err, executor.ErrAttemptTimeout)
}

func TestExecuteParentCancelIsAbandoned(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{})
	require.NoError(t, err)
	errLeaseLost := errors.New("lease lost")
	ctx, cancel := context.WithCancelCause(t.Context())
	started := make(chan struct{})
	go func() {
		<-started
		cancel(errLeaseLost)
	}()
	_, v := executor.Execute(ctx, p, nil, func(ctx context.Context) (int, error) {
		close(started)
		<-ctx.Done()
		return 0, ctx.Err()
	})
	require.Equal(t, executor.Abandoned, v.Class)
	require.ErrorIs(t, v.Err, errLeaseLost)
	require.False(t, v.Timeout)
}

func TestExecuteReportsHandlerIgnoringContext(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{Timeout: 10 * time.Millisecond, OverrunGrace: 10 * time.Millisecond})
	require.NoError(t, err)
	overran := make(chan struct{})
	var overruns atomic.Int32
	start := time.Now()
	var returnedAt time.Time
	res, v := executor.Execute(t.Context(), p, func() {
		if overruns.Add(1) == 1 {
			close(overran)
		}
	}, func(ctx context.Context) (string, error) {
		// Ignores ctx: returns only once the overrun was reported.
		select {
		case <-overran:
		case <-time.After(waitLimit):
			return "", errors.New("overrun never reported")
		}
		returnedAt = time.Now()
		return "late", nil
	})
	require.EqualValues(t, 1, overruns.Load(), "the overrun is reported once")
	require.GreaterOrEqual(t, returnedAt.Sub(start), 20*time.Millisecond, "reported only after timeout plus grace")
	// Execute waited for the handler (its slot is not reused until it returns); its late
	// success is still a success: the effect happened.
	require.Equal(t, executor.Succeeded, v.Class)
	require.Equal(t, "late", res)
}

func TestExecuteReportsOverrunThenTimesOut(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{Timeout: 10 * time.Millisecond, OverrunGrace: 10 * time.Millisecond})
	require.NoError(t, err)
	overran := make(chan struct{})
	_, v := executor.Execute(t.Context(), p, func() { close(overran) }, func(ctx context.Context) (int, error) {
		<-overran
		return 0, errors.New("gave up late")
	})
	require.Equal(t, executor.Retry, v.Class)
	require.True(t, v.Timeout)
	require.ErrorIs(t, v.Err, executor.ErrAttemptTimeout)
	require.Contains(t, v.Err.Error(), "gave up late")
}

// A window without returns while handlers run means they are slow (or ignore their timeout):
// nothing is held ahead of them. A message put back without a call is no return.
func TestPipelineDepthAheadDropsWhileHandlersHang(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(time.Unix(1_000_000, 0))
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 2, MaxAhead: 100, Clock: clock})
	require.NoError(t, err)
	for range 25 { // fast returns: every 5ms, all that is held
		n, err := p.Admit(t.Context(), 1000)
		require.NoError(t, err)
		for range n {
			require.True(t, p.TryAcquire() || p.Acquire(t.Context()) == nil)
			p.Finish(executor.Verdict{Class: executor.Succeeded}, false)
		}
		clock.Advance(5 * time.Millisecond)
	}
	require.Positive(t, p.Ahead())
	// Both slots taken by handlers that hang; the others are put back, uncalled.
	n, err := p.Admit(t.Context(), 1000)
	require.NoError(t, err)
	require.True(t, p.TryAcquire())
	require.True(t, p.TryAcquire())
	for range n - 2 {
		p.Putback(false, false)
	}
	// The window of the last fast returns closes, then one passes with none.
	clock.Advance(100 * time.Millisecond)
	n, err = p.Admit(t.Context(), 1000)
	require.NoError(t, err)
	p.Release(n, false)
	clock.Advance(100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	_, err = p.Admit(ctx, 1000)
	require.ErrorIs(t, err, context.DeadlineExceeded, "nothing more is admitted: the two hanging handlers fill what may be held")
	require.Zero(t, p.Ahead(), "no return in a window while handlers run")
	require.Equal(t, 2, p.Held())
}

// Permits the breaker gave while closed, whose admission then waited (every place held) while
// the breaker opened and turned half-open, are not handed out as if they were trials: the
// admission takes a trial instead, and only as many as the breaker allows (found by review).
func TestPipelineAdmitDropsPermitsGivenBeforeTheBreakerOpened(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(time.Unix(1_000_000, 0))
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 1, Clock: clock,
		Breaker: executor.BreakerConfig{MinCalls: 1, FailureRate: 0.5, OpenFor: time.Second, HalfOpenCalls: 1}})
	require.NoError(t, err)
	n, trial, err := p.AdmitTrial(t.Context(), 1) // the one place, held by a hanging call
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.False(t, trial)
	require.True(t, p.TryAcquire())

	type admitted struct {
		n     int
		trial bool
	}
	got := make(chan admitted, 1)
	go func() {
		n, trial, err := p.AdmitTrial(t.Context(), 5) // closed permits, then waits for a place
		if err == nil {
			got <- admitted{n, trial}
		}
	}()
	time.Sleep(20 * time.Millisecond)
	p.Finish(executor.Verdict{Class: executor.Retry, Err: context.DeadlineExceeded}, false) // opens it
	require.Equal(t, executor.BreakerOpen, p.Breaker().State())
	clock.Advance(time.Second)
	require.Equal(t, executor.BreakerHalfOpen, p.Breaker().State())
	select {
	case a := <-got:
		require.True(t, a.trial, "what is admitted now is a trial")
		require.Equal(t, 1, a.n, "no more than the breaker's one trial")
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, _, err := p.Breaker().AdmitTrial(ctx, 1)
		require.ErrorIs(t, err, context.DeadlineExceeded, "the one trial is out: it was taken, not a stale permit passed off as one")
	case <-time.After(5 * time.Second):
		t.Fatal("admission did not resume")
	}
}
