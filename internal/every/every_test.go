package every_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/every"
)

func TestDoStopsWhenFnSaysSo(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	every.Do(t.Context(), time.Millisecond, false, func(context.Context) bool { return n.Add(1) < 3 })
	require.EqualValues(t, 3, n.Load())
}

func TestDoNowCallsAtOnce(t *testing.T) {
	t.Parallel()
	var n atomic.Int32
	every.Do(t.Context(), time.Hour, true, func(context.Context) bool { n.Add(1); return false })
	require.EqualValues(t, 1, n.Load(), "called at once, not after an hour")
}

func TestDoStopsWithItsContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		every.Do(ctx, time.Hour, false, func(context.Context) bool { return true })
		close(done)
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return when its context ended")
	}
	ran := false
	every.Do(ctx, time.Millisecond, true, func(context.Context) bool { ran = true; return true })
	require.False(t, ran, "an ended context calls nothing, even with now")
}

func TestDoOrWakeCallsOnWake(t *testing.T) {
	t.Parallel()
	wake := make(chan struct{})
	calls := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		every.DoOrWake(ctx, time.Hour, false, wake, func(context.Context) bool { calls <- struct{}{}; return true })
	}()
	wake <- struct{}{}
	select {
	case <-calls:
	case <-time.After(5 * time.Second):
		t.Fatal("a wake did not call fn (the tick is an hour away)")
	}
	cancel()
	<-done
}
