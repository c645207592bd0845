package config_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/config"
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
