package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/internal/executor"
)

func TestParseDefaultsAndValues(t *testing.T) {
	t.Parallel()
	f, err := config.Parse([]byte(`
kinds:
  charge:
    handler: http
    max_attempts: 8
    timeout: 10s
    backoff: {base: 2s, max: 1m}
    concurrency: 4
    http:
      allow: ["https://api.example.com/"]
  ping:
    handler: noop
`))
	require.NoError(t, err)
	require.Len(t, f.Kinds, 2)
	charge, ping := f.Kinds[0], f.Kinds[1]
	require.Equal(t, config.Kind{
		Name: "charge", Handler: "http", MaxAttempts: 8, Timeout: 10 * time.Second,
		BackoffBase: 2 * time.Second, BackoffMax: time.Minute, Concurrency: 4,
		AckWait: config.DefaultAckWait, MaxDeliveries: config.DefaultMaxDeliveries,
		FleetConcurrency: config.DefaultFleetConcurrency, HTTPAllow: []string{"https://api.example.com/"},
		Breaker: executor.BreakerConfig{Window: 30 * time.Second, MinCalls: 20, FailureRate: 0.5, OpenFor: 30 * time.Second, HalfOpenCalls: 3},
	}, charge)
	require.Equal(t, "ping", ping.Name)
	require.Equal(t, config.DefaultMaxAttempts, ping.MaxAttempts)
	require.Equal(t, config.DefaultTimeout, ping.Timeout)
	require.Equal(t, config.DefaultBackoffBase, ping.BackoffBase)
	require.Equal(t, config.DefaultBackoffMax, ping.BackoffMax)
	require.Equal(t, config.DefaultConcurrency, ping.Concurrency)
}

func TestParseErrorsNameTheKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, doc string
		want      []string
	}{
		{"empty", ``, []string{"empty config"}},
		{"no kinds", "kinds: {}\n", []string{"no kinds"}},
		{"unknown top key", "kinds: {a: {handler: noop}}\nworkers: 3\n", []string{"line 2", `unknown key "workers"`}},
		{"unknown kind key", "kinds:\n  a:\n    handler: noop\n    retries: 3\n", []string{"line 4", `unknown key "retries"`}},
		{"unknown backoff key", "kinds:\n  a:\n    handler: noop\n    backoff: {min: 1s}\n", []string{`unknown key "min"`, "backoff"}},
		{"bad duration", "kinds:\n  a:\n    handler: noop\n    timeout: 10x\n", []string{"kinds.a.timeout", "line 4", `"10x"`}},
		{"negative duration", "kinds:\n  a:\n    handler: noop\n    timeout: -1s\n", []string{"kinds.a.timeout", "positive"}},
		{"bad backoff", "kinds:\n  a:\n    handler: noop\n    backoff: {base: 1m, max: 1s}\n", []string{"kinds.a.backoff.max"}},
		{"zero attempts", "kinds:\n  a:\n    handler: noop\n    max_attempts: 0\n", []string{"kinds.a.max_attempts"}},
		{"attempts not int", "kinds:\n  a:\n    handler: noop\n    max_attempts: many\n", []string{"line 4", "many"}},
		{"concurrency", "kinds:\n  a:\n    handler: noop\n    concurrency: 0\n", []string{"kinds.a.concurrency"}},
		{"deliveries", "kinds:\n  a:\n    handler: noop\n    max_attempts: 10\n    max_deliveries: 10\n", []string{"kinds.a.max_deliveries"}},
		{"ack wait", "kinds:\n  a:\n    handler: noop\n    ack_wait: 10ms\n", []string{"kinds.a.ack_wait"}},
		{"no handler", "kinds:\n  a:\n    max_attempts: 3\n", []string{"kinds.a", "handler is required"}},
		{"unknown handler", "kinds:\n  a:\n    handler: smtp\n", []string{"kinds.a.handler", `"smtp"`}},
		{"bad kind", "kinds:\n  Bad.Kind:\n    handler: noop\n", []string{"invalid kind", "Bad.Kind"}},
		{"http on noop", "kinds:\n  a:\n    handler: noop\n    http: {allow: []}\n", []string{"kinds.a.http"}},
		{"not yaml", "kinds: [\n", []string{"line"}},
		{"bad rate", "kinds:\n  a:\n    handler: noop\n    rate: fast\n", []string{"kinds.a.rate", "fast"}},
		{"burst without rate", "kinds:\n  a:\n    handler: noop\n    burst: 5\n", []string{"kinds.a.burst", "needs a rate"}},
		{"zero burst", "kinds:\n  a:\n    handler: noop\n    rate: 5/s\n    burst: 0\n", []string{"kinds.a.burst"}},
		{"unknown breaker key", "kinds:\n  a:\n    handler: noop\n    breaker: {threshold: 3}\n", []string{`unknown key "threshold"`, "breaker"}},
		{"failure rate", "kinds:\n  a:\n    handler: noop\n    breaker: {failure_rate: 1.5}\n", []string{"kinds.a.breaker.failure_rate"}},
		{"breaker window", "kinds:\n  a:\n    handler: noop\n    breaker: {window: soon}\n", []string{"kinds.a.breaker.window", "soon"}},
		{"min calls", "kinds:\n  a:\n    handler: noop\n    breaker: {min_calls: 0}\n", []string{"kinds.a.breaker.min_calls"}},
		{"fallback missing", "kinds:\n  a:\n    handler: noop\n    fallback: b\n", []string{"kinds.a.fallback", `"b"`, "not defined"}},
		{"fallback self", "kinds:\n  a:\n    handler: noop\n    fallback: a\n", []string{"kinds.a.fallback", "itself"}},
		{"fallback_after alone", "kinds:\n  a:\n    handler: noop\n    fallback_after: 1m\n", []string{"kinds.a.fallback_after"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse([]byte(tc.doc))
			require.Error(t, err)
			for _, w := range tc.want {
				require.Contains(t, err.Error(), w)
			}
			require.NotContains(t, err.Error(), "\n", "errors are one line")
		})
	}
}

func TestParseResilienceKeys(t *testing.T) {
	t.Parallel()
	f, err := config.Parse([]byte(`
kinds:
  charge:
    handler: http
    rate: 50/s
    burst: 10
    concurrency: 8
    fleet_concurrency: 32
    breaker: {window: 1m, min_calls: 10, failure_rate: 0.25, open_for: 15s, half_open_calls: 2}
    fallback: charge_backup
    fallback_after: 2m
  charge_backup:
    handler: http
    rate: 3000/m
`))
	require.NoError(t, err)
	charge, backup := f.Kinds[0], f.Kinds[1]
	require.Equal(t, executor.Rate{Events: 50, Per: time.Second}, charge.Rate)
	require.Equal(t, 10, charge.Burst)
	require.Equal(t, 32, charge.FleetConcurrency)
	require.Equal(t, executor.BreakerConfig{Window: time.Minute, MinCalls: 10, FailureRate: 0.25, OpenFor: 15 * time.Second, HalfOpenCalls: 2}, charge.Breaker)
	require.Equal(t, "charge_backup", charge.Fallback)
	require.Equal(t, 2*time.Minute, charge.FallbackAfter)
	require.Equal(t, executor.Rate{Events: 3000, Per: time.Minute}, backup.Rate)
	require.Equal(t, 50, backup.Burst, "burst defaults to the rate per second")
	require.Empty(t, backup.Fallback)
}
