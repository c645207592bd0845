package executor_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")
	errShutdown := errors.New("worker shutting down")

	live := func() context.Context { return context.Background() }
	timedOut := func() context.Context {
		ctx, cancel := context.WithDeadlineCause(context.Background(), time.Now().Add(-time.Second), executor.ErrAttemptTimeout)
		t.Cleanup(cancel)
		return ctx
	}
	cancelled := func(cause error) func() context.Context {
		return func() context.Context {
			ctx, cancel := context.WithCancelCause(context.Background())
			cancel(cause)
			return ctx
		}
	}

	tests := []struct {
		name           string
		ctx            func() context.Context
		err            error
		wantClass      executor.Class
		wantReason     string
		wantRetryAfter time.Duration
		wantTimeout    bool
		wantIs         []error
	}{
		{name: "nil is success", ctx: live, err: nil, wantClass: executor.Succeeded},
		{name: "nil after timeout is still success", ctx: timedOut, err: nil, wantClass: executor.Succeeded},
		{name: "plain error retries", ctx: live, err: errBoom, wantClass: executor.Retry, wantIs: []error{errBoom}},
		{name: "permanent is dead", ctx: live, err: executor.Permanent(errBoom),
			wantClass: executor.Dead, wantReason: executor.ReasonPermanent, wantIs: []error{errBoom}},
		{name: "wrapped permanent is dead", ctx: live, err: fmt.Errorf("charge: %w", executor.Permanent(errBoom)),
			wantClass: executor.Dead, wantReason: executor.ReasonPermanent, wantIs: []error{errBoom}},
		{name: "reason inside permanent", ctx: live,
			err:       &executor.PermanentError{Err: &executor.ReasonError{Reason: executor.ReasonDisallowedURL, Err: errBoom}},
			wantClass: executor.Dead, wantReason: executor.ReasonDisallowedURL, wantIs: []error{errBoom}},
		{name: "permanent wins over timeout", ctx: timedOut, err: executor.Permanent(errBoom),
			wantClass: executor.Dead, wantReason: executor.ReasonPermanent},
		{name: "retry after", ctx: live, err: executor.RetryAfter(3*time.Second, errBoom),
			wantClass: executor.Retry, wantRetryAfter: 3 * time.Second, wantIs: []error{errBoom}},
		{name: "wrapped retry after", ctx: live, err: fmt.Errorf("call: %w", executor.RetryAfter(time.Minute, nil)),
			wantClass: executor.Retry, wantRetryAfter: time.Minute},
		{name: "our timeout retries", ctx: timedOut, err: context.DeadlineExceeded,
			wantClass: executor.Retry, wantTimeout: true, wantIs: []error{executor.ErrAttemptTimeout, context.DeadlineExceeded}},
		{name: "our timeout with another error", ctx: timedOut, err: errBoom,
			wantClass: executor.Retry, wantTimeout: true, wantIs: []error{executor.ErrAttemptTimeout, errBoom}},
		{name: "cancelled with another cause is abandoned", ctx: cancelled(errShutdown), err: context.Canceled,
			wantClass: executor.Abandoned, wantIs: []error{errShutdown}},
		{name: "plain cancel is abandoned", ctx: cancelled(nil), err: errBoom,
			wantClass: executor.Abandoned, wantIs: []error{context.Canceled}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := executor.Classify(tt.ctx(), tt.err)
			require.Equal(t, tt.wantClass, v.Class)
			require.Equal(t, tt.wantReason, v.Reason)
			require.Equal(t, tt.wantRetryAfter, v.RetryAfter)
			require.Equal(t, tt.wantTimeout, v.Timeout)
			if tt.wantClass == executor.Succeeded {
				require.NoError(t, v.Err)
			} else {
				require.Error(t, v.Err)
			}
			for _, target := range tt.wantIs {
				require.ErrorIs(t, v.Err, target)
			}
		})
	}
}

func TestErrorTypes(t *testing.T) {
	t.Parallel()
	errBoom := errors.New("boom")

	require.NoError(t, executor.Permanent(nil))
	perm := executor.Permanent(errBoom)
	require.Equal(t, "boom", perm.Error())
	require.ErrorIs(t, perm, errBoom)
	require.Equal(t, "permanent error", (&executor.PermanentError{}).Error())

	ra := executor.RetryAfter(2*time.Second, errBoom)
	require.Equal(t, "boom (retry after 2s)", ra.Error())
	require.ErrorIs(t, ra, errBoom)
	var rae *executor.RetryAfterError
	require.ErrorAs(t, executor.RetryAfter(time.Second, nil), &rae)
	require.Equal(t, time.Second, rae.Delay)
	require.Error(t, rae.Err, "a nil error still asks for a retry")

	re := &executor.ReasonError{Reason: executor.ReasonPayloadInvalid, Err: errBoom}
	require.Equal(t, "boom", re.Error())
	require.ErrorIs(t, re, errBoom)
}
