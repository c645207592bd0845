package config_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin, whatever the machine's zoneinfo

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/leveetype"
)

const oneKind = "kinds:\n  ping: {handler: noop}\n"

func TestParsePeriodic(t *testing.T) {
	t.Parallel()
	f, err := config.Parse([]byte(oneKind + `
periodic:
  - name: nightly-settlement   # the idempotency key of each run is periodic:<name>:<tick>
    kind: settle               # served by another worker: fine
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    payload: {"url": "https://api.example.com/settle", "body": {}}
    catch_up: all
  - name: heartbeat
    kind: ping
    every: 10m
  - name: report
    kind: ping
    every: 24h
    catch_up: skip
    payload:
      to: [ops@example.com, "dev@example.com"]
      subject: daily <report> & more
      limit: 10
`))
	require.NoError(t, err)
	require.Len(t, f.Kinds, 1)
	require.Equal(t, []leveetype.PeriodicJob{
		{Name: "nightly-settlement", Kind: "settle", Cron: "0 2 * * *", Timezone: "Europe/Berlin",
			Payload: json.RawMessage(`{"url":"https://api.example.com/settle","body":{}}`), CatchUp: leveetype.CatchUpAll},
		{Name: "heartbeat", Kind: "ping", Every: 10 * time.Minute, Timezone: "UTC", Payload: json.RawMessage("null"), CatchUp: leveetype.CatchUpLatest},
		{Name: "report", Kind: "ping", Every: 24 * time.Hour, Timezone: "UTC", CatchUp: leveetype.CatchUpSkip,
			Payload: json.RawMessage(`{"to":["ops@example.com","dev@example.com"],"subject":"daily <report> & more","limit":10}`)},
	}, f.Periodic, "in file order, defaults filled in, payloads as compact JSON with their keys in order")

	f, err = config.Parse([]byte(oneKind))
	require.NoError(t, err)
	require.Empty(t, f.Periodic)
	_, err = config.Parse([]byte("periodic:\n  - {name: a, kind: ping, every: 1m}\n"))
	require.ErrorContains(t, err, "no kinds", "a worker's file still needs a kind")
}

// A payload is any YAML value, written as the JSON it means.
func TestPeriodicPayloadIsJSON(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ yaml, want string }{
		{"", "null"},
		{"payload: ~", "null"},
		{"payload:", "null"},
		{"payload: hello", `"hello"`},
		{`payload: "42"`, `"42"`},
		{"payload: 42", "42"},
		{"payload: -1.5e3", "-1.5e3"},
		{"payload: 12345678901234567890", "12345678901234567890"},
		{"payload: 0x1F", "31"},
		{"payload: .5", "0.5"},
		{"payload: true", "true"},
		{"payload: 2026-12-24", `"2026-12-24"`},
		{"payload: !!binary aGk=", `"aGk="`},
		{"payload: !!str 5", `"5"`},
		{`payload: "a<b>&c \u00e9"`, `"a<b>&c é"`},
		{"payload: [1, two, {three: 3}, [], {}]", `[1,"two",{"three":3},[],{}]`},
		{"payload: {z: 1, a: 2, m: 3}", `{"z":1,"a":2,"m":3}`},
		{"payload: |\n      line one\n      line two", `"line one\nline two\n"`},
		{"payload: {\"1\": one, '<<': literal}", `{"1":"one","<<":"literal"}`},
		{"payload: {a: &x {k: v}, b: *x}", `{"a":{"k":"v"},"b":{"k":"v"}}`},
		{"payload: {base: &b {k: v, w: 1}, c: {<<: *b, w: 2}}", `{"base":{"k":"v","w":1},"c":{"w":2,"k":"v"}}`},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			t.Parallel()
			f, err := config.Parse([]byte(oneKind + "periodic:\n  - name: a\n    kind: ping\n    every: 1m\n    " + tc.yaml + "\n"))
			require.NoError(t, err)
			require.Equal(t, tc.want, string(f.Periodic[0].Payload))
			require.True(t, json.Valid(f.Periodic[0].Payload))
		})
	}
}

// Every error about a periodic job names it by index and name, the key, and the key's line.
func TestPeriodicErrorsNameTheEntryKeyAndLine(t *testing.T) {
	t.Parallel()
	doc := func(lines ...string) []byte {
		return []byte(oneKind + "periodic:\n  - name: ok\n    kind: ping\n    every: 1m\n  - " + strings.Join(lines, "\n    ") + "\n")
	}
	for _, tc := range []struct {
		name string
		doc  []byte
		want string
	}{
		{"no name", doc("kind: ping", "every: 1m"), "periodic[1].name (line 7): is required"},
		{"bad name", doc("kind: ping", "name: Bad Name", "every: 1m"), `periodic[1].name (line 8): "Bad Name" is invalid: use 1-100 characters of [a-z0-9_-]`},
		{"duplicate name", doc("kind: ping", "every: 1m", "name: ok"), `periodic[1] (ok).name (line 9): "ok" is already the name of periodic[0] (line 4): names must be unique`},
		{"no kind", doc("name: b", "every: 1m"), "periodic[1] (b).kind (line 7): is required"},
		{"bad kind", doc("name: b", "kind: Bad.Kind", "every: 1m"), `periodic[1] (b).kind (line 8): "Bad.Kind" is invalid: a kind is 1-64 characters`},
		{"no schedule", doc("name: b", "kind: ping"), `periodic[1] (b) (line 7): has no schedule: set cron (e.g. "0 2 * * *") or every (e.g. 10m)`},
		{"both", doc("name: b", "kind: ping", "cron: '* * * * *'", "every: 1m"), "periodic[1] (b).every (line 10): and cron are both set: give one of them"},
		{"cron fields", doc("name: b", "kind: ping", "cron: 0 2 * *"), `periodic[1] (b).cron (line 9): "0 2 * *" does not parse: expected exactly 5 fields, found 4`},
		{"cron seconds", doc("name: b", "kind: ping", "cron: 0 0 2 * * *"), "periodic[1] (b).cron (line 9): \"0 0 2 * * *\" does not parse: expected exactly 5 fields, found 6"},
		{"cron descriptor", doc("name: b", "kind: ping", "cron: '@every 1h'"), `periodic[1] (b).cron (line 9): "@every 1h" is a descriptor, which is not supported`},
		{"cron never", doc("name: b", "kind: ping", "cron: 0 0 30 2 *"), `periodic[1] (b).cron (line 9): "0 0 30 2 *" never fires`},
		{"cron number", doc("name: b", "kind: ping", "cron: 5"), `periodic[1] (b).cron (line 9): "5" does not parse`},
		{"bad every", doc("name: b", "kind: ping", "every: 10x"), `periodic[1] (b).every (line 9): invalid duration "10x": use a number with a unit`},
		{"every number", doc("name: b", "kind: ping", "every: 10"), `periodic[1] (b).every (line 9): invalid duration "10"`},
		{"every zero", doc("name: b", "kind: ping", "every: 0s"), "periodic[1] (b).every (line 9): must be at least 1s, got 0s"},
		{"every short", doc("name: b", "kind: ping", "every: 500ms"), "periodic[1] (b).every (line 9): must be at least 1s, got 500ms"},
		{"every negative", doc("name: b", "kind: ping", "every: -1m"), "periodic[1] (b).every (line 9): must be at least 1s, got -1m0s"},
		{"every in a zone", doc("name: b", "kind: ping", "every: 24h", "timezone: Europe/Berlin"), `periodic[1] (b).timezone (line 10): "Europe/Berlin" is only for cron`},
		{"timezone", doc("name: b", "kind: ping", "cron: 0 2 * * *", "timezone: Mars/Olympus"), `periodic[1] (b).timezone (line 10): "Mars/Olympus" is not a time zone`},
		{"timezone local", doc("name: b", "kind: ping", "cron: 0 2 * * *", "timezone: Local"), `periodic[1] (b).timezone (line 10): "Local" differs from worker to worker`},
		{"catch_up", doc("name: b", "kind: ping", "every: 1m", "catch_up: everything"), `periodic[1] (b).catch_up (line 10): must be skip, latest or all, got "everything"`},
		{"payload key", doc("name: b", "kind: ping", "every: 1m", "payload:", "  a: 1", "  1: one"), `periodic[1] (b).payload (line 12): has the map key "1", which is not a string: JSON keys are strings, so quote it`},
		{"payload null key", doc("name: b", "kind: ping", "every: 1m", "payload: {~: 1}"), `periodic[1] (b).payload (line 10): has the map key "~", which is not a string`},
		{"payload list key", doc("name: b", "kind: ping", "every: 1m", "payload: {[1]: 1}"), "periodic[1] (b).payload (line 10): has the map key a list or a map"},
		{"payload inf", doc("name: b", "kind: ping", "every: 1m", "payload:", "  x: [1, .inf]"), "periodic[1] (b).payload (line 11): has .inf, which JSON cannot hold: quote it for a string"},
		{"payload twice", doc("name: b", "kind: ping", "every: 1m", "payload:", "  a: 1", "  a: 2"), `periodic[1] (b).payload (line 12): has the key "a" twice in one map`},
		{"payload merge", doc("name: b", "kind: ping", "every: 1m", "payload: {<<: [1]}"), "periodic[1] (b).payload (line 10): merges (<<) something other than a map"},
		{"unknown key", doc("name: b", "kind: ping", "every: 1m", "retries: 3"), `line 10: unknown key "retries" in a periodic job (want name, kind, cron, every, timezone, payload, catch_up)`},
		{"catch_up list", doc("name: b", "kind: ping", "every: 1m", "catch_up: [all]"), "line 10: cannot unmarshal !!seq into catch_up (want skip, latest or all)"},
		{"entry not a map", []byte(oneKind + "periodic:\n  - nightly\n"), "line 4: cannot unmarshal !!str `nightly` into a periodic job"},
		{"not a list", []byte(oneKind + "periodic:\n  nightly: {kind: ping}\n"), "line 4: cannot unmarshal !!map into periodic (want a list of periodic jobs"},
		{"merged entry", []byte(oneKind + "periodic:\n  - &e\n    name: a\n    kind: ping\n    every: 1m\n  - <<: *e\n    name: b\n    every: 0s\n"),
			"periodic[1] (b).every (line 10): must be at least 1s, got 0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Parse(tc.doc)
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.want)
			require.NotContains(t, err.Error(), "\n", "errors are one line")
		})
	}
}

// Aliases in a payload that expand without end are refused at once: the decoder does not
// expand a payload, the conversion to JSON does, within bounds.
func TestPeriodicPayloadAliasesAreBounded(t *testing.T) {
	t.Parallel()
	doc := oneKind + "periodic:\n  - name: a\n    kind: ping\n    every: 1m\n    payload:\n      l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n"
	for i := 1; i <= 9; i++ {
		doc += "      l" + string(rune('0'+i)) + ": &l" + string(rune('0'+i)) + " [" + strings.TrimSuffix(strings.Repeat("*l"+string(rune('0'+i-1))+", ", 10), ", ") + "]\n"
	}
	start := time.Now()
	_, err := config.Parse([]byte(doc))
	require.ErrorContains(t, err, "periodic[0] (a).payload")
	require.ErrorContains(t, err, "has more than 100000 values")
	require.Less(t, time.Since(start), 2*time.Second)
}
