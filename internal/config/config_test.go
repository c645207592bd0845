package config_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/leveetype"
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
		Name: "charge", Handler: "http", HTTPAllow: []string{"https://api.example.com/"},
		Policy: leveetype.Policy{
			MaxAttempts: 8, Timeout: 10 * time.Second, Backoff: leveetype.Backoff{Base: 2 * time.Second, Max: time.Minute},
			Concurrency: 4, AckWait: leveetype.DefaultAckWait, MaxDeliveries: leveetype.DefaultMaxDeliveries,
			FleetConcurrency: leveetype.DefaultFleetConcurrency,
			Breaker:          leveetype.BreakerPolicy{Window: 30 * time.Second, MinCalls: 20, FailureRate: 0.5, OpenFor: 30 * time.Second, HalfOpenCalls: 3, Scope: leveetype.ScopeFleet},
		},
	}, charge)
	require.Equal(t, "ping", ping.Name)
	require.Equal(t, leveetype.Policy{}.WithDefaults(), ping.Policy, "every key left out takes its default")
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
		{"breaker scope", "kinds:\n  a:\n    handler: noop\n    breaker: {scope: everyone}\n", []string{"kinds.a.breaker.scope", `"everyone"`, "fleet", "worker"}},
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
    breaker: {window: 1m, min_calls: 10, failure_rate: 0.25, open_for: 15s, half_open_calls: 2, scope: worker}
    fallback: charge_backup
    fallback_after: 2m
  charge_backup:
    handler: http
    rate: 3000/m
`))
	require.NoError(t, err)
	charge, backup := f.Kinds[0], f.Kinds[1]
	require.Equal(t, leveetype.Rate{Events: 50, Per: time.Second}, charge.Policy.Rate)
	require.Equal(t, 10, charge.Policy.Burst)
	require.Equal(t, 32, charge.Policy.FleetConcurrency)
	require.Equal(t, leveetype.BreakerPolicy{Window: time.Minute, MinCalls: 10, FailureRate: 0.25, OpenFor: 15 * time.Second, HalfOpenCalls: 2, Scope: leveetype.ScopeWorker}, charge.Policy.Breaker)
	require.Equal(t, "charge_backup", charge.Policy.Fallback)
	require.Equal(t, 2*time.Minute, charge.Policy.FallbackAfter)
	require.Equal(t, leveetype.Rate{Events: 3000, Per: time.Minute}, backup.Policy.Rate)
	require.Equal(t, 50, backup.Policy.Burst, "burst defaults to the rate per second")
	require.Empty(t, backup.Policy.Fallback)
}

// Every error about a key names the key's own line, not its kind's: the value may sit far
// below the kind's name.
func TestErrorsNameTheKeysOwnLine(t *testing.T) {
	t.Parallel()
	doc := func(lines ...string) []byte {
		return []byte("kinds:\n  a:\n    handler: noop\n    concurrency: 2\n" + strings.Join(lines, "\n") + "\n")
	}
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"max_deliveries", doc("    max_attempts: 10", "    max_deliveries: 10"), "kinds.a.max_deliveries (line 6): (10) must exceed max_attempts (10)"},
		{"max_attempts", doc("    timeout: 5s", "    max_attempts: 5000"), "kinds.a.max_attempts (line 6): must be 1 to 1000"},
		{"nested", doc("    breaker:", "      window: 1m", "      min_calls: -1"), "kinds.a.breaker.min_calls (line 7): must be at least 1"},
		{"scope", doc("    breaker:", "      scope: all"), "kinds.a.breaker.scope (line 6)"},
		{"burst", doc("    timeout: 5s", "    burst: 5"), "kinds.a.burst (line 6): needs a rate"},
		{"fallback self", doc("    fallback: a"), "kinds.a.fallback (line 5): names the kind itself"},
		{"fallback_after", doc("    timeout: 5s", "    fallback_after: 1m"), "kinds.a.fallback_after (line 6): needs a fallback kind"},
		{"backoff max", doc("    backoff:", "      base: 1m", "      max: 1s"), "kinds.a.backoff.max (line 7)"},
		{"backoff max by default", doc("    backoff:", "      base: 10m"), "kinds.a.backoff.max (line 5): (5m0s) must not be below backoff.base (10m0s)"},
		{"ack_wait", doc("    ack_wait: 10ms"), "kinds.a.ack_wait (line 5): must be at least 1s"},
		{"zero", doc("    timeout: 5s", "    fleet_concurrency: 0"), "kinds.a.fleet_concurrency (line 6): must not be 0"},
		{"bad rate", doc("    timeout: 5s", "    rate: 5/d"), "kinds.a.rate (line 6): invalid rate"},
		{"merged", []byte("kinds:\n  a: &base\n    handler: noop\n    max_attempts: 9\n  b:\n    <<: *base\n    max_deliveries: 9\n"),
			"kinds.b.max_deliveries (line 7)"},
		// Of two merged mappings the first wins, as YAML has it: c's fallback is x's (line 4).
		{"merge order", []byte("kinds:\n  x: &x\n    handler: noop\n    fallback: c\n  y: &y\n    handler: noop\n    fallback: x\n  c:\n    <<: [*x, *y]\n"),
			"kinds.c.fallback (line 4): names the kind itself"},
		// A merge takes a nested mapping whole: b's own backoff has no max, so the default's
		// error points at b's backoff (line 7), not at a's max.
		{"merge is shallow", []byte("kinds:\n  a: &a\n    handler: noop\n    backoff: {base: 1s, max: 2s}\n  b:\n    <<: *a\n    backoff:\n      base: 10m\n"),
			"kinds.b.backoff.max (line 7)"},
		{"kinds merged in", []byte("kinds:\n  a:\n    handler: noop\n  <<:\n    b:\n      handler: noop\n      ack_wait: 500ms\n"),
			"kinds.b.ack_wait (line 7)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(tc.doc)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

// A number or duration given as 0, however YAML spells it, is refused: 0 is not how a file
// asks for the default (the key is left out), and the decoder would read it as the default.
func TestZerosAreRefusedHoweverSpelt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, value, want string }{
		{"concurrency", "0", "kinds.a.concurrency (line 4): must not be 0"},
		{"concurrency", "0x0", "kinds.a.concurrency (line 4): must not be 0"},
		{"max_attempts", "0o0", "kinds.a.max_attempts (line 4): must not be 0"},
		{"concurrency", "0.5", "kinds.a.concurrency (line 4): must not be 0"},
		{"fleet_concurrency", "-0.5", "kinds.a.fleet_concurrency (line 4): must not be 0"},
		{"timeout", "0s", "kinds.a.timeout (line 4): must be positive"},
		{"rate", "{}", "kinds.a.rate (line 4): give a rate such as"},
		{"rate", "{events: 5}", "kinds.a.rate (line 4): give a rate such as"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse([]byte("kinds:\n  a:\n    handler: noop\n    " + tc.key + ": " + tc.value + "\n"))
			require.ErrorContains(t, err, tc.want)
		})
	}
	for _, v := range []string{"0x0", "0.0", "0"} {
		_, err := config.Parse([]byte("kinds:\n  a:\n    handler: noop\n    breaker:\n      failure_rate: " + v + "\n"))
		require.ErrorContains(t, err, "kinds.a.breaker.failure_rate (line 5): must be above 0", v)
	}
}

// Aliases that expand without end, or a mapping that merges itself, are refused at once.
func TestRunawayAliasesAreRefusedAtOnce(t *testing.T) {
	t.Parallel()
	self := "kinds:\n  a: &a\n    handler: noop\n    <<: [" + strings.TrimSuffix(strings.Repeat("*a, ", 20), ", ") + "]\n"
	laughs := "kinds:\n  a: &l0 {handler: noop}\n"
	for i := 1; i <= 9; i++ {
		laughs += fmt.Sprintf("  k%d: &l%d {<<: [%s]}\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}
	for name, doc := range map[string]string{"self merge": self, "laughs": laughs} {
		start := time.Now()
		_, err := config.Parse([]byte(doc))
		require.Error(t, err, name)
		require.Less(t, time.Since(start), 2*time.Second, "%s took %s", name, time.Since(start))
	}
}
