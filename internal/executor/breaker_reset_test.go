package executor_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

func TestBreakerResetClosesAndWakesAdmit(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{})
	bb.trip(t)

	admitted := make(chan int, 1)
	go func() {
		n, err := bb.breaker.Admit(t.Context(), 2)
		if err == nil {
			admitted <- n
		}
	}()
	bb.breaker.Reset()
	select {
	case n := <-admitted:
		require.Equal(t, 2, n, "a closed breaker admits everything asked")
	case <-time.After(breakerWaitLimit):
		t.Fatal("Admit still waiting after Reset")
	}
	snap := bb.breaker.Snapshot()
	require.Equal(t, executor.BreakerClosed, snap.State)
	require.Zero(t, snap.Calls, "Reset empties the window")
	require.True(t, bb.breaker.OpenUntil().IsZero())

	// One more failure does not reopen it: the old failures are gone.
	bb.breaker.Record(true)
	bb.breaker.Record(false)
	require.Equal(t, executor.BreakerClosed, bb.breaker.State())
}

func TestBreakerResetWhenClosedEmptiesWindow(t *testing.T) {
	t.Parallel()
	bb := setupBreaker(t, executor.BreakerConfig{})
	bb.record(t, true, true, true)
	bb.breaker.Reset()
	bb.record(t, true)
	require.Equal(t, executor.BreakerClosed, bb.breaker.State(), "three old failures were forgotten")
}
