package config_test

import (
	"encoding/json"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// FuzzParse feeds Parse arbitrary documents. It must never panic, give the same answer twice,
// refuse with one line that names a key or a line, and accept only kinds that keep every
// documented bound.
func FuzzParse(f *testing.F) {
	for _, doc := range []string{
		"",
		"\x00",
		"kinds: {}\n",
		"kinds:\n  charge:\n    handler: noop\n",
		`
kinds:
  charge:
    handler: http
    max_attempts: 8
    timeout: 10s
    backoff: {base: 2s, max: 1m}
    concurrency: 4
    ack_wait: 1m
    max_deliveries: 50
    fleet_concurrency: 100
    rate: 50/s
    burst: 10
    http:
      allow: ["https://api.example.com/v1/"]
    breaker: {window: 1m, min_calls: 10, failure_rate: 0.25, open_for: 15s, half_open_calls: 2}
    fallback: charge_backup
    fallback_after: 2m
  charge_backup:
    handler: noop
    rate: 3000/m
`,
		// Duplicate keys, at every level.
		"kinds:\n  a:\n    handler: noop\n  a:\n    handler: http\n",
		"kinds:\n  a:\n    handler: noop\n    handler: http\n",
		"kinds: {a: {handler: noop}}\nkinds: {b: {handler: noop}}\n",
		// Wrong shapes and types.
		"kinds: [a, b]\n",
		"kinds:\n  a: noop\n",
		"kinds:\n  a:\n    handler: [noop]\n",
		"kinds:\n  a:\n    handler: noop\n    timeout: {s: 1}\n",
		"kinds:\n  a:\n    handler: noop\n    max_attempts: 1e3\n",
		"kinds:\n  a:\n    handler: noop\n    max_attempts: 99999999999999999999\n",
		"kinds:\n  a:\n    handler: noop\n    breaker: {failure_rate: .nan}\n",
		"kinds:\n  a:\n    handler: noop\n    breaker: {failure_rate: .inf}\n",
		"kinds:\n  a:\n    handler: noop\n    rate: 9223372036854775807/s\n",
		"kinds:\n  a:\n    handler: noop\n    timeout: 9999999999h\n",
		"kinds:\n  a:\n    handler: noop\n    timeout: 1ns\n    ack_wait: 1s\n",
		"kinds:\n  a:\n    handler: noop\n    timeout: ~\n",
		"kinds:\n  ~:\n    handler: noop\n",
		"kinds:\n  \"\":\n    handler: noop\n",
		"kinds:\n  \"a\\nb\":\n    handler: noop\n",
		"kinds:\n  1:\n    handler: noop\n",
		"kinds:\n  a:\n    handler: noop\n    fallback: \"B\"\n",
		// Anchors, aliases, merge keys, tags, several documents, flow style.
		"base: &b {handler: noop}\nkinds: {a: *b}\n",
		"kinds:\n  a: &a {handler: noop}\n  b:\n    <<: *a\n    max_attempts: 3\n",
		"kinds: !!map {a: !!map {handler: !!str noop}}\n",
		"kinds: {a: {handler: noop}}\n---\nkinds: {b: {handler: nope}}\n",
		"a: &a [*a]\n",
		"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b]\n",
		// Broken YAML: tabs, unclosed flow, odd indentation, control characters, invalid UTF-8,
		// a byte-order mark, deep nesting.
		"kinds:\n\ta:\n\t\thandler: noop\n",
		"kinds: [\n",
		"kinds:\n  a:\n   handler: noop\n  b:\n handler: noop\n",
		"kinds:\n  a:\n    handler: \"no\x00op\"\n",
		"kinds:\n  a:\n    handler: no\x07op\n",
		"kinds:\n  \xff\xfe:\n    handler: noop\n",
		"\ufeffkinds:\n  a:\n    handler: noop\n",
		strings.Repeat("[", 1000) + strings.Repeat("]", 1000),
		"kinds:\n  a:\n    handler: noop\n    http: {allow: [" + strings.Repeat(`"https://x/",`, 1000) + "]}\n",
		// Periodic jobs: schedules, zones, payloads of every shape, duplicates, merges.
		`
kinds:
  ping: {handler: noop}
periodic:
  - name: nightly-settlement
    kind: settle
    cron: "0 2 * * *"
    timezone: Europe/Berlin
    payload: {"url": "https://api.example.com/settle", "body": {}}
    catch_up: all
  - &e {name: heartbeat, kind: ping, every: 10m, catch_up: skip, payload: [1, "two", {three: 3.5}, ~, true]}
  - {<<: *e, name: other, every: 1h}
`,
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, every: 1m}\n  - {name: a, kind: a, every: 1m}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, cron: '30 2 * * *', timezone: America/New_York}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, cron: 'TZ=UTC', every: 0s}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, cron: '0 0 31 4 *'}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, cron: '@daily', timezone: Local}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, every: 1m, payload: {1: x, ~: y, .inf: z}}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, every: 1m, payload: !!binary aGk=}\n",
		"kinds: {a: {handler: noop}}\nperiodic:\n  - {name: a, kind: a, every: 1m, payload: &p {a: *p}}\n",
		"kinds: {a: {handler: noop}}\nperiodic: [x, {}, ~, [1]]\n",
		"kinds: {a: {handler: noop}}\nperiodic: {a: 1}\n",
	} {
		f.Add([]byte(doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		file, err := config.Parse(doc)
		again, err2 := config.Parse(doc)
		if (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) || !reflect.DeepEqual(file, again) {
			t.Fatalf("Parse is not deterministic: %v, then %v", err, err2)
		}
		if err != nil {
			checkParseError(t, err)
			return
		}
		checkFile(t, file)
	})
}

// namesKeyOrLine matches what a config error must point at: a line, the kinds section, or a
// key path kinds.<kind>[.<key>] or periodic[<i>][.<key>].
var namesKeyOrLine = regexp.MustCompile(`line \d+|\bkinds\b|"kinds:"|\bperiodic\[\d+\]`)

func checkParseError(t *testing.T, err error) {
	t.Helper()
	msg := err.Error()
	if strings.TrimSpace(msg) == "" || strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error is not one non-empty line: %q", msg)
	}
	if !namesKeyOrLine.MatchString(msg) {
		t.Fatalf("error %q names neither a key nor a line", msg)
	}
}

func checkFile(t *testing.T, file *config.File) {
	t.Helper()
	if len(file.Kinds) == 0 {
		t.Fatal("accepted a file without kinds")
	}
	names := map[string]bool{}
	for _, k := range file.Kinds {
		names[k.Name] = true
	}
	if len(names) != len(file.Kinds) || !sort.SliceIsSorted(file.Kinds, func(i, j int) bool { return file.Kinds[i].Name < file.Kinds[j].Name }) {
		t.Fatalf("kinds are not unique and in name order: %+v", file.Kinds)
	}
	for _, k := range file.Kinds {
		bad := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("accepted kind %q: "+format, append([]any{k.Name}, args...)...)
		}
		if err := queue.ValidateKind(k.Name); err != nil {
			bad("%v", err)
		}
		if k.Handler != config.HandlerHTTP && k.Handler != config.HandlerNoop {
			bad("handler %q", k.Handler)
		}
		p := k.Policy
		if p.MaxAttempts < 1 || p.MaxAttempts > leveetype.MaxAttemptsLimit || p.MaxDeliveries <= p.MaxAttempts {
			bad("max_attempts %d, max_deliveries %d", p.MaxAttempts, p.MaxDeliveries)
		}
		if p.Timeout <= 0 || p.Backoff.Base <= 0 || p.Backoff.Max < p.Backoff.Base || p.AckWait < time.Second || p.FallbackAfter < 0 {
			bad("durations %s %s %s %s %s", p.Timeout, p.Backoff.Base, p.Backoff.Max, p.AckWait, p.FallbackAfter)
		}
		if p.Concurrency < 1 || p.Concurrency > 10000 || p.FleetConcurrency < 1 {
			bad("concurrency %d, fleet_concurrency %d", p.Concurrency, p.FleetConcurrency)
		}
		b := p.Breaker
		if b.Window <= 0 || b.MinCalls < 1 || !(b.FailureRate > 0 && b.FailureRate <= 1) || b.OpenFor <= 0 || b.HalfOpenCalls < 1 ||
			b.Scope != leveetype.ScopeFleet && b.Scope != leveetype.ScopeWorker {
			bad("breaker %+v", b)
		}
		if p.Rate.IsZero() != (p.Burst == 0) || p.Burst < 0 {
			bad("rate %s with burst %d", p.Rate, p.Burst)
		}
		if p.Fallback != "" && (p.Fallback == k.Name || !names[p.Fallback]) {
			bad("fallback %q", p.Fallback)
		}
		if p.FallbackAfter > 0 && p.Fallback == "" {
			bad("fallback_after without fallback")
		}
		if len(k.HTTPAllow) > 0 && k.Handler != config.HandlerHTTP {
			bad("http.allow on handler %q", k.Handler)
		}
	}
	periodic := map[string]bool{}
	for _, p := range file.Periodic {
		if periodic[p.Name] {
			t.Fatalf("accepted periodic job %q twice", p.Name)
		}
		periodic[p.Name] = true
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted periodic job %q: %v", p.Name, err)
		}
		if !reflect.DeepEqual(p, p.WithDefaults()) || !json.Valid(p.Payload) {
			t.Fatalf("accepted periodic job %q without its defaults or with a payload that is not JSON: %+v", p.Name, p)
		}
		if err := queue.ValidateKey(leveetype.TickKey(p.Name, time.Now())); err != nil {
			t.Fatalf("periodic job %q: its tick keys are not idempotency keys: %v", p.Name, err)
		}
		s, err := p.Schedule()
		if err != nil {
			t.Fatalf("accepted periodic job %q with no schedule: %v", p.Name, err)
		}
		from := time.Date(2026, 12, 3, 10, 7, 13, 0, time.UTC)
		if next := s.Next(from); !next.After(from) {
			t.Fatalf("periodic job %q: next tick %s is not after %s", p.Name, next, from)
		}
	}
}
