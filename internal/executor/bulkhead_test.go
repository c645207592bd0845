package executor_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

// waitLimit bounds waits for a signal that must come; reaching it fails the test.
const waitLimit = 10 * time.Second

type acquired struct {
	n   int
	err error
}

// acquireAsync starts Acquire in a goroutine and returns the channel its answer arrives on.
func acquireAsync(ctx context.Context, b *executor.Bulkhead, max int) <-chan acquired {
	ch := make(chan acquired, 1)
	go func() {
		n, err := b.Acquire(ctx, max)
		ch <- acquired{n, err}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan acquired) acquired {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(waitLimit):
		t.Fatal("Acquire did not return")
		return acquired{}
	}
}

func TestNewBulkheadSize(t *testing.T) {
	t.Parallel()
	for _, size := range []int{0, -1} {
		_, err := executor.NewBulkhead(size)
		require.Error(t, err)
		require.Contains(t, err.Error(), "bulkhead size")
	}
	b, err := executor.NewBulkhead(3)
	require.NoError(t, err)
	require.Equal(t, 0, b.InUse())
	n, err := b.Acquire(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 3, n, "three slots")
}

func TestBulkheadTryAcquire(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(3)
	require.NoError(t, err)
	require.Equal(t, 2, b.TryAcquire(2))
	require.Equal(t, 1, b.TryAcquire(5), "takes only what is free")
	require.Equal(t, 0, b.TryAcquire(1))
	require.Equal(t, 3, b.InUse())
	b.Release(2)
	require.Equal(t, 1, b.InUse())
	require.Equal(t, 2, b.TryAcquire(10))
	b.Release(0) // no-op
	require.Equal(t, 3, b.InUse())
}

func TestBulkheadAcquireTakesFreeSlotsAtOnce(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(4)
	require.NoError(t, err)
	n, err := b.Acquire(t.Context(), 3)
	require.NoError(t, err)
	require.Equal(t, 3, n)
	n, err = b.Acquire(t.Context(), 3)
	require.NoError(t, err)
	require.Equal(t, 1, n, "at least one, up to max")
}

func TestBulkheadAcquireWaitsForRelease(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(2)
	require.NoError(t, err)
	require.Equal(t, 2, b.TryAcquire(2))

	got := acquireAsync(t.Context(), b, 2)
	select {
	case a := <-got:
		t.Fatalf("Acquire returned %+v while every slot was taken", a)
	default:
	}
	b.Release(1)
	a := receive(t, got)
	require.NoError(t, a.err)
	require.Equal(t, 1, a.n)
	require.Equal(t, 2, b.InUse())
}

func TestBulkheadAcquireHonoursCancel(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(1)
	require.NoError(t, err)
	require.Equal(t, 1, b.TryAcquire(1))

	// Already cancelled: returns at once.
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	n, err := b.Acquire(done, 1)
	require.ErrorIs(t, err, context.Canceled)
	require.Zero(t, n)

	// Cancelled while waiting.
	ctx, cancel := context.WithCancel(t.Context())
	got := acquireAsync(ctx, b, 1)
	cancel()
	a := receive(t, got)
	require.ErrorIs(t, a.err, context.Canceled)
	require.Zero(t, a.n)
	require.Equal(t, 1, b.InUse(), "a cancelled Acquire takes nothing")

	// The slot is still usable afterwards.
	b.Release(1)
	n, err = b.Acquire(t.Context(), 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
}

func TestBulkheadReleaseOverSizePanics(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(2)
	require.NoError(t, err)
	require.Panics(t, func() { b.Release(1) })

	b2, err := executor.NewBulkhead(2)
	require.NoError(t, err)
	require.Equal(t, 1, b2.TryAcquire(1))
	require.Panics(t, func() { b2.Release(2) })
}

// Two waiters and a release of two slots: both must wake (no lost wake-up).
func TestBulkheadReleaseWakesEveryWaiter(t *testing.T) {
	t.Parallel()
	b, err := executor.NewBulkhead(2)
	require.NoError(t, err)
	require.Equal(t, 2, b.TryAcquire(2))
	first := acquireAsync(t.Context(), b, 1)
	second := acquireAsync(t.Context(), b, 1)
	b.Release(2)
	require.Equal(t, 1, receive(t, first).n)
	require.Equal(t, 1, receive(t, second).n)
	require.Equal(t, 2, b.InUse())
}
