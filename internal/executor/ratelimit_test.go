package executor_test

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/executor/executortest"
	"github.com/levee-dev/levee/leveetype"
)

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestLimiterDefaultBurst(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate  string
		burst int
		want  int
	}{
		{"50/s", 0, 50},
		{"3000/m", 0, 50},
		{"100/m", 0, 2}, // 1.67/s rounds up
		{"1/s", 0, 1},
		{"10/h", 0, 1},
		{"50/s", 5, 5},
		{"1/m", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.rate, func(t *testing.T) {
			t.Parallel()
			r, err := leveetype.ParseRate(tt.rate)
			require.NoError(t, err)
			l := executor.NewLimiter(r, tt.burst, executortest.NewClock(epoch))
			n, err := l.Available(t.Context(), 1000)
			require.NoError(t, err)
			require.Equal(t, tt.want, n, "a fresh limiter offers its whole burst")
			n, err = l.Available(t.Context(), 2)
			require.NoError(t, err)
			require.Equal(t, min(2, tt.want), n, "at most what is asked, and Available takes nothing")
			require.InDelta(t, r.PerSecond(), l.Share(), 1e-12)
		})
	}
}

type available struct {
	n   int
	err error
}

func availableAsync(ctx context.Context, l *executor.Limiter, upTo int) <-chan available {
	ch := make(chan available, 1)
	go func() {
		n, err := l.Available(ctx, upTo)
		ch <- available{n, err}
	}()
	return ch
}

func receiveAvailable(t *testing.T, ch <-chan available) available {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(waitLimit):
		t.Fatal("Available did not return")
		return available{}
	}
}

// waitTimer waits until a goroutine arms a timer on clock, that is, blocks on it.
func waitTimer(t *testing.T, clock *executortest.Clock) {
	t.Helper()
	select {
	case <-clock.TimerCreated():
	case <-time.After(waitLimit):
		t.Fatal("no timer was armed")
	}
}

func requireBlocked(t *testing.T, ch <-chan available) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("Available returned %+v while no token was due", a)
	default:
	}
}

func TestLimiterAvailableWaitsForAToken(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{Events: 10, Per: time.Second}, 2, clock)

	n, err := l.Available(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	l.Take(n)

	ch := availableAsync(t.Context(), l, 5)
	waitTimer(t, clock)
	clock.Advance(99 * time.Millisecond) // a token takes 100ms at 10/s
	requireBlocked(t, ch)
	clock.Advance(time.Millisecond)
	got := receiveAvailable(t, ch)
	require.NoError(t, got.err)
	require.Equal(t, 1, got.n)
	require.Equal(t, 100*time.Millisecond, l.Waited())

	// Time that passed without a call refills the bucket up to the burst, no further.
	l.Take(1)
	clock.Advance(time.Hour)
	n, err = l.Available(t.Context(), 5)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, 100*time.Millisecond, l.Waited(), "no wait when tokens are there")
}

func TestLimiterAvailableCancel(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{Events: 1, Per: time.Minute}, 1, clock)
	l.Take(1)

	ctx, cancel := context.WithCancel(t.Context())
	ch := availableAsync(ctx, l, 1)
	waitTimer(t, clock)
	clock.Advance(30 * time.Second)
	cancel()
	got := receiveAvailable(t, ch)
	require.ErrorIs(t, got.err, context.Canceled)
	require.Zero(t, got.n)
	require.Equal(t, 30*time.Second, l.Waited(), "a cancelled wait still counts")

	// An ended context does not hide tokens that are there: the non-blocking path comes first.
	clock.Advance(30 * time.Second)
	n, err := l.Available(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	l.Take(1)
	_, err = l.Available(ctx, 1)
	require.ErrorIs(t, err, context.Canceled)
}

func TestLimiterZeroRateNeverWaits(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{}, 0, clock)
	for range 1000 {
		n, err := l.Available(t.Context(), 7)
		require.NoError(t, err)
		require.Equal(t, 7, n)
		l.Take(n)
	}
	l.SetShare(5)
	require.Zero(t, l.Share(), "0 means no limit")
	n, err := l.Available(t.Context(), 0)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Zero(t, l.Waited())
	select {
	case <-clock.TimerCreated():
		t.Fatal("an unlimited limiter armed a timer")
	default:
	}
}

// simulate runs a puller's loop on l for span of fake time: Available, then Take all it
// offered. Whenever the loop blocks, the clock moves by step, which must be at least the
// time one token takes. It returns the number of tokens taken at or before start+span.
func simulate(t *testing.T, clock *executortest.Clock, l *executor.Limiter, upTo int, span, step time.Duration) int {
	t.Helper()
	end := clock.Now().Add(span)
	done := make(chan int, 1)
	go func() {
		taken := 0
		for {
			n, err := l.Available(t.Context(), upTo)
			if err != nil || clock.Now().After(end) {
				done <- taken
				return
			}
			l.Take(n)
			taken += n
		}
	}()
	for {
		select {
		case taken := <-done:
			return taken
		case <-clock.TimerCreated():
			clock.Advance(step)
		case <-time.After(waitLimit):
			t.Fatal("the simulated puller is stuck: a wait was longer than a step")
		}
	}
}

func TestLimiterRateOverTime(t *testing.T) {
	t.Parallel()
	const span = 10 * time.Second
	tests := []struct {
		name    string
		rate    leveetype.Rate
		burst   int
		members int
		upTo    int
	}{
		{"50/s", leveetype.Rate{Events: 50, Per: time.Second}, 0, 1, 10},
		{"3000/m pull 1", leveetype.Rate{Events: 3000, Per: time.Minute}, 0, 1, 1},
		{"7/s burst 1", leveetype.Rate{Events: 7, Per: time.Second}, 1, 1, 100},
		{"1000/s burst 5", leveetype.Rate{Events: 1000, Per: time.Second}, 5, 1, 64},
		{"30/s shared by 3", leveetype.Rate{Events: 30, Per: time.Second}, 0, 3, 10},
		{"100/s shared by 7", leveetype.Rate{Events: 100, Per: time.Second}, 0, 7, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := executortest.NewClock(epoch)
			l := executor.NewLimiter(tt.rate, tt.burst, clock)
			l.SetShare(tt.members)
			share := tt.rate.PerSecond() / float64(tt.members)
			require.InDelta(t, share, l.Share(), 1e-9)

			burst, err := l.Available(t.Context(), math.MaxInt)
			require.NoError(t, err)
			// Step a little more than one token's time, so every wait ends within a step.
			step := time.Duration(float64(time.Second)/share) + time.Millisecond
			taken := simulate(t, clock, l, tt.upTo, span, step)

			want := share * span.Seconds()
			t.Logf("taken %d in %s at %.3g/s with burst %d; waited %s", taken, span, share, burst, l.Waited())
			require.LessOrEqual(t, float64(taken), want+float64(burst), "burst %d", burst)
			require.GreaterOrEqual(t, float64(taken), want-1, "burst %d", burst)
			require.Positive(t, l.Waited())
			require.LessOrEqual(t, l.Waited(), span+step)
		})
	}
}

func TestLimiterSetShare(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{Events: 30, Per: time.Second}, 0, clock)

	l.SetShare(3)
	require.InDelta(t, 10.0, l.Share(), 1e-9)
	n, err := l.Available(t.Context(), 100)
	require.NoError(t, err)
	require.Equal(t, 10, n, "the burst is shared too")

	l.SetShare(0)
	require.InDelta(t, 30.0, l.Share(), 1e-9, "fewer than 1 member counts as 1")
	l.SetShare(100)
	require.InDelta(t, 0.3, l.Share(), 1e-9)
	n, err = l.Available(t.Context(), 100)
	require.NoError(t, err)
	require.Equal(t, 1, n, "the burst share is at least 1")
}

func TestLimiterSetShareWakesAWaiter(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{Events: 10, Per: time.Second}, 10, clock)
	l.SetShare(10) // 1/s, burst 1
	l.Take(1)

	ch := availableAsync(t.Context(), l, 5)
	waitTimer(t, clock) // armed for 1s
	l.SetShare(1)       // 10/s: a token in 100ms
	waitTimer(t, clock) // re-armed for 100ms
	clock.Advance(100 * time.Millisecond)
	got := receiveAvailable(t, ch)
	require.NoError(t, got.err)
	require.Equal(t, 1, got.n)
}

func TestLimiterTakeBeyondBurstIsDebt(t *testing.T) {
	t.Parallel()
	clock := executortest.NewClock(epoch)
	l := executor.NewLimiter(leveetype.Rate{Events: 10, Per: time.Second}, 10, clock)
	n, err := l.Available(t.Context(), 100)
	require.NoError(t, err)
	require.Equal(t, 10, n)
	l.SetShare(5) // the share shrank between Available and Take: burst 2, 2/s
	l.Take(n)     // 10 taken from a bucket of 2: 8 tokens of debt

	ch := availableAsync(t.Context(), l, 5)
	waitTimer(t, clock)
	clock.Advance(4 * time.Second) // 8 tokens of debt repaid at 2/s
	requireBlocked(t, ch)
	clock.Advance(500 * time.Millisecond)
	got := receiveAvailable(t, ch)
	require.NoError(t, got.err)
	require.Equal(t, 1, got.n)
}
