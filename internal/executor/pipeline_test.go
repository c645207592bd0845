package executor_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := executor.Policy{}.Defaults()
	require.Equal(t, executor.Policy{
		MaxAttempts:  5,
		Timeout:      30 * time.Second,
		Backoff:      executor.DefaultBackoff,
		Concurrency:  10,
		OverrunGrace: 5 * time.Second,
		Clock:        executor.SystemClock,
		Breaker:      executor.BreakerConfig{Clock: executor.SystemClock}.Defaults(),
	}, p)
	require.NoError(t, p.Validate())

	set := executor.Policy{MaxAttempts: 2, Timeout: time.Second, Backoff: executor.Backoff{Base: time.Millisecond, Max: time.Second},
		Concurrency: 3, OverrunGrace: time.Millisecond, Clock: executor.SystemClock,
		Breaker: executor.BreakerConfig{Clock: executor.SystemClock}.Defaults()}
	require.Equal(t, set, set.Defaults(), "set fields are kept")
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	valid := executor.Policy{}.Defaults()
	tests := []struct {
		name  string
		mod   func(*executor.Policy)
		field string
	}{
		{"max attempts zero", func(p *executor.Policy) { p.MaxAttempts = 0 }, "max_attempts"},
		{"max attempts negative", func(p *executor.Policy) { p.MaxAttempts = -2 }, "max_attempts"},
		{"timeout zero", func(p *executor.Policy) { p.Timeout = 0 }, "timeout"},
		{"timeout negative", func(p *executor.Policy) { p.Timeout = -time.Second }, "timeout"},
		{"backoff base zero", func(p *executor.Policy) { p.Backoff.Base = 0 }, "backoff.base"},
		{"backoff max below base", func(p *executor.Policy) { p.Backoff = executor.Backoff{Base: time.Second, Max: time.Millisecond} }, "backoff.max"},
		{"concurrency zero", func(p *executor.Policy) { p.Concurrency = 0 }, "concurrency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := valid
			tt.mod(&p)
			err := p.Validate()
			require.Error(t, err)
			require.Contains(t, err.Error(), tt.field)
		})
	}
}

func TestNewPipelineRejectsInvalidPolicy(t *testing.T) {
	t.Parallel()
	_, err := executor.NewPipeline(executor.Policy{MaxAttempts: -1})
	require.Error(t, err)
	require.Contains(t, err.Error(), "max_attempts")
	_, err = executor.NewPipeline(executor.Policy{Backoff: executor.Backoff{Base: time.Minute, Max: time.Second}})
	require.Error(t, err)
	require.Contains(t, err.Error(), "backoff.max")
}

func TestPipelineAdmitRelease(t *testing.T) {
	t.Parallel()
	p, err := executor.NewPipeline(executor.Policy{Concurrency: 2})
	require.NoError(t, err)
	require.Equal(t, 2, p.Policy().Concurrency)
	require.Equal(t, 5, p.Policy().MaxAttempts, "zero fields take their defaults")
	n, err := p.Admit(t.Context(), 64)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, 2, p.InFlight())

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.Admit(ctx, 1)
	require.ErrorIs(t, err, context.Canceled, "admission waits only as long as its context")

	p.Release(2)
	require.Equal(t, 0, p.InFlight())
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
