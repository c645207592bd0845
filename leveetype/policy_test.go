package leveetype_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/leveetype"
)

func TestParseRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		want   leveetype.Rate
		perSec float64
		str    string
	}{
		{"50/s", leveetype.Rate{Events: 50, Per: time.Second}, 50, "50/s"},
		{"3000/m", leveetype.Rate{Events: 3000, Per: time.Minute}, 50, "3000/m"},
		{"10/h", leveetype.Rate{Events: 10, Per: time.Hour}, 10.0 / 3600, "10/h"},
		{" 1/s ", leveetype.Rate{Events: 1, Per: time.Second}, 1, "1/s"},
		{"", leveetype.Rate{}, 0, "none"},
		{"none", leveetype.Rate{}, 0, "none"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := leveetype.ParseRate(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.InDelta(t, tt.perSec, got.PerSecond(), 1e-12)
			require.Equal(t, tt.str, got.String())
			require.Equal(t, tt.perSec == 0, got.IsZero())
			again, err := leveetype.ParseRate(got.String())
			require.NoError(t, err, "String must read back")
			require.Equal(t, got, again)
		})
	}
}

func TestParseRateErrors(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		"50", "50/", "/s", "50/x", "50/S", "50/sec", "50/1s", "0/s", "-5/s", "2.5/s", "fifty/s",
		"50 /s", "50/s/s", "unlimited",
	} {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			_, err := leveetype.ParseRate(in)
			require.Error(t, err)
			msg := err.Error()
			require.Contains(t, msg, `"`+strings.TrimSpace(in)+`"`, "the error names the value")
			require.Contains(t, msg, `"50/s"`, "the error gives an example")
			require.NotContains(t, msg, "\n")
		})
	}
}

func TestRateString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		rate leveetype.Rate
		want string
	}{
		{leveetype.Rate{}, "none"},
		{leveetype.Rate{Events: 5, Per: 0}, "none"},
		{leveetype.Rate{Events: -1, Per: time.Second}, "none"},
		{leveetype.Rate{Events: 5, Per: 2 * time.Second}, "5/2s"},
	}
	for _, tt := range tests {
		require.Equal(t, tt.want, tt.rate.String())
		require.Equal(t, tt.want == "none", tt.rate.IsZero())
	}
}

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := leveetype.Policy{}.WithDefaults()
	require.Equal(t, leveetype.Policy{
		MaxAttempts: 5, Timeout: 30 * time.Second, Backoff: leveetype.Backoff{Base: time.Second, Max: 5 * time.Minute},
		Concurrency: 10, AckWait: 30 * time.Second, MaxDeliveries: 100, FleetConcurrency: 1000,
		Breaker: leveetype.BreakerPolicy{Window: 30 * time.Second, MinCalls: 20, FailureRate: 0.5, OpenFor: 30 * time.Second,
			HalfOpenCalls: 3, Scope: leveetype.ScopeFleet},
	}, p)
	require.NoError(t, p.Validate("k"))
	require.Equal(t, p, p.WithDefaults(), "set fields are kept")

	r := leveetype.Policy{Rate: leveetype.Rate{Events: 100, Per: time.Minute}}.WithDefaults()
	require.Equal(t, 2, r.Burst, "burst defaults to the rate per second, rounded up")
	require.Equal(t, -3, leveetype.Policy{MaxAttempts: -3}.WithDefaults().MaxAttempts, "negative values are kept for Validate")
}

// Validate is the one check of a policy, for the Go API and the YAML config alike: each
// impossible value is named by its YAML key.
func TestPolicyValidateNamesTheKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key string
		mod func(*leveetype.Policy)
	}{
		{"max_attempts", func(p *leveetype.Policy) { p.MaxAttempts = -1 }},
		{"max_attempts", func(p *leveetype.Policy) { p.MaxAttempts = leveetype.MaxAttemptsLimit + 1 }},
		{"timeout", func(p *leveetype.Policy) { p.Timeout = -time.Second }},
		{"backoff.base", func(p *leveetype.Policy) { p.Backoff.Base = -time.Second }},
		{"backoff.max", func(p *leveetype.Policy) { p.Backoff = leveetype.Backoff{Base: time.Minute, Max: time.Second} }},
		{"concurrency", func(p *leveetype.Policy) { p.Concurrency = leveetype.MaxConcurrency + 1 }},
		{"ack_wait", func(p *leveetype.Policy) { p.AckWait = 500 * time.Millisecond }},
		{"max_deliveries", func(p *leveetype.Policy) { p.MaxAttempts, p.MaxDeliveries = 10, 10 }},
		{"max_deliveries", func(p *leveetype.Policy) { p.MaxAttempts = 200 }}, // above the default deliveries
		{"fleet_concurrency", func(p *leveetype.Policy) { p.FleetConcurrency = -1 }},
		{"rate", func(p *leveetype.Policy) { p.Rate = leveetype.Rate{Events: 5} }},
		{"burst", func(p *leveetype.Policy) { p.Burst = 5 }},
		{"burst", func(p *leveetype.Policy) { p.Rate, p.Burst = leveetype.Rate{Events: 5, Per: time.Second}, -1 }},
		{"breaker.window", func(p *leveetype.Policy) { p.Breaker.Window = -time.Second }},
		{"breaker.min_calls", func(p *leveetype.Policy) { p.Breaker.MinCalls = -1 }},
		{"breaker.failure_rate", func(p *leveetype.Policy) { p.Breaker.FailureRate = 1.01 }},
		{"breaker.failure_rate", func(p *leveetype.Policy) { p.Breaker.FailureRate = math.NaN() }},
		{"breaker.open_for", func(p *leveetype.Policy) { p.Breaker.OpenFor = -time.Second }},
		{"breaker.half_open_calls", func(p *leveetype.Policy) { p.Breaker.HalfOpenCalls = -1 }},
		{"breaker.scope", func(p *leveetype.Policy) { p.Breaker.Scope = "everyone" }},
		{"fallback", func(p *leveetype.Policy) { p.Fallback = "Bad.Kind" }},
		{"fallback", func(p *leveetype.Policy) { p.Fallback = "k" }},
		{"fallback_after", func(p *leveetype.Policy) { p.FallbackAfter = time.Minute }},
		{"fallback_after", func(p *leveetype.Policy) { p.Fallback, p.FallbackAfter = "other", -time.Second }},
		{"fallback_after", func(p *leveetype.Policy) { p.Fallback, p.FallbackAfter = "other", 3*time.Nanosecond }}, // a worker's ticker panicked on it
	} {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			var p leveetype.Policy
			tc.mod(&p)
			err := p.WithDefaults().Validate("k")
			var pe *leveetype.PolicyError
			require.True(t, errors.As(err, &pe), "%v", err)
			require.Equal(t, tc.key, pe.Key, pe.Msg)
			require.True(t, strings.HasPrefix(err.Error(), tc.key+" "), err.Error())
			require.NotContains(t, err.Error(), "\n")
		})
	}
}
