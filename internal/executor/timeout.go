package executor

import (
	"context"
	"fmt"
	"time"
)

// runWithTimeout runs fn with a context that ends after timeout with cause ErrAttemptTimeout,
// and classifies the outcome while that context still tells why it ended. It always waits for
// fn to return: a handler that ignores its context keeps its bulkhead slot until it does. If fn
// is still running grace after its timeout, onOverrun is called once (from another goroutine)
// so the worker can report it.
func runWithTimeout[T any](ctx context.Context, timeout, grace time.Duration, onOverrun func(), fn func(context.Context) (T, error)) (T, Verdict) {
	attemptCtx, cancel := context.WithTimeoutCause(ctx, timeout, ErrAttemptTimeout)
	defer cancel()
	if onOverrun != nil {
		t := time.AfterFunc(timeout+grace, onOverrun)
		defer t.Stop()
	}
	res, err := callRecovering(attemptCtx, fn)
	return res, Classify(attemptCtx, err)
}

// callRecovering calls fn and turns a panic into an error wrapping ErrPanic.
func callRecovering[T any](ctx context.Context, fn func(context.Context) (T, error)) (res T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrPanic, p)
		}
	}()
	return fn(ctx)
}
