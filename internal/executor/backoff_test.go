package executor_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

func TestBackoffCeiling(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		n    int
		want time.Duration
	}{
		{-3, 100 * time.Millisecond},
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{6, time.Second},
		{1000, time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.n), func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, b.Ceiling(tt.n))
		})
	}
}

func TestBackoffCeilingBaseEqualsMax(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: time.Second, Max: time.Second}
	for _, n := range []int{0, 1, 2, 50} {
		require.Equal(t, time.Second, b.Ceiling(n), "n=%d", n)
	}
}

func TestBackoffDelay(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		n    int
		r    float64
		want time.Duration
	}{
		{1, 0, 0},
		{1, 0.5, 50 * time.Millisecond},
		{1, 0.999, 99900 * time.Microsecond},
		{0, 0.5, 50 * time.Millisecond},
		{3, 0, 0},
		{3, 0.5, 200 * time.Millisecond},
		{3, 0.999, 399600 * time.Microsecond},
		{5, 0.5, 500 * time.Millisecond},
		{5, 0.999, 999 * time.Millisecond},
		{40, 0.999, 999 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("n=%d,r=%v", tt.n, tt.r), func(t *testing.T) {
			t.Parallel()
			got := b.Delay(tt.n, tt.r)
			require.InDelta(t, float64(tt.want), float64(got), float64(time.Microsecond))
			require.Less(t, got, b.Ceiling(tt.n)+1, "full jitter stays below the ceiling")
		})
	}
}

func TestBackoffNextStaysInRange(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}
	for n := 1; n <= 10; n++ {
		for range 50 {
			d := b.Delay(n, rand.Float64())
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.Less(t, d, b.Ceiling(n))
		}
	}
}

func TestBackoffRetryDelay(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		name string
		n    int
		v    executor.Verdict
		r    float64
		want time.Duration
	}{
		{"no retry-after uses backoff", 3, executor.Verdict{Class: executor.Retry}, 0.5, 200 * time.Millisecond},
		{"retry-after replaces backoff", 3, executor.Verdict{Class: executor.Retry, RetryAfter: 3 * time.Second}, 0.5, 3 * time.Second},
		{"retry-after may exceed backoff max", 1, executor.Verdict{Class: executor.Retry, RetryAfter: 90 * time.Second}, 0.999, 90 * time.Second},
		{"retry-after is capped", 1, executor.Verdict{Class: executor.Retry, RetryAfter: 48 * time.Hour}, 0.5, 24 * time.Hour},
		{"zero retry-after uses backoff", 2, executor.Verdict{Class: executor.Retry, RetryAfter: 0}, 0.999, 199800 * time.Microsecond},
		{"negative retry-after uses backoff", 2, executor.Verdict{Class: executor.Retry, RetryAfter: -time.Second}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := b.RetryDelay(tt.n, tt.v, tt.r)
			require.InDelta(t, float64(tt.want), float64(got), float64(time.Microsecond))
		})
	}
}

func TestRetryDelayFromClassifiedRetryAfter(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	v := executor.Classify(t.Context(), fmt.Errorf("call: %w", executor.RetryAfter(2*time.Second, errors.New("503"))))
	require.Equal(t, executor.Retry, v.Class)
	require.Equal(t, 2*time.Second, b.RetryDelay(1, v, 0.999))
}

func TestBackoffCeilingDoesNotOverflow(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: time.Second, Max: time.Duration(math.MaxInt64)}
	for _, n := range []int{35, 63, 64, 1000} {
		require.Positive(t, b.Ceiling(n), "n=%d", n)
	}
}

// Full jitter spreads retries uniformly over [0, ceiling): check the mean and the quartiles
// of many draws (the tolerances are many standard deviations wide).
func TestBackoffJitterIsUniform(t *testing.T) {
	t.Parallel()
	b := executor.Backoff{Base: time.Second, Max: time.Minute}
	const n, retry = 20000, 4 // ceiling 8s
	ceiling := b.Ceiling(retry)
	var sum time.Duration
	var quart [4]int
	for range n {
		d := b.Delay(retry, rand.Float64())
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.Less(t, d, ceiling)
		sum += d
		quart[int(4*d/ceiling)]++
	}
	mean := float64(sum) / n / float64(ceiling)
	require.InDelta(t, 0.5, mean, 0.02, "mean delay is half the ceiling")
	for i, c := range quart {
		require.InDelta(t, 0.25, float64(c)/n, 0.02, "quartile %d", i)
	}
}
