package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
)

// stats runs `stats --json` and returns the object it printed.
func (b *bundle) stats(t *testing.T, args ...string) map[string]any {
	t.Helper()
	r := b.run(t, "", append([]string{"stats", "--json"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m), r.stdout)
	return m
}

// kindLine returns kind's object in the kinds of a `stats --json` object.
func kindLine(t *testing.T, m map[string]any, kind string) map[string]any {
	t.Helper()
	for _, k := range m["kinds"].([]any) {
		if line := k.(map[string]any); line["kind"] == kind {
			return line
		}
	}
	t.Fatalf("no kind %q in %v", kind, m["kinds"])
	return nil
}

// tableLine returns the line of the stats table that starts with kind.
func tableLine(t *testing.T, out, kind string) string {
	t.Helper()
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, kind+" ") {
			return line
		}
	}
	t.Fatalf("no line for kind %q in\n%s", kind, out)
	return ""
}

func TestStatsFreshNamespace(t *testing.T) {
	t.Parallel()
	b := setup(t)
	m := b.stats(t)
	require.Len(t, m, len(jsonKeys(reflect.TypeFor[admin.Stats]())))
	require.Equal(t, []any{}, m["kinds"])
	require.Equal(t, map[string]any{"total": 0.0, "by_reason": map[string]any{}}, m["dlq"])
	require.Equal(t, false, m["scan_capped"])
	require.NotEmpty(t, m["generated_at"])

	r := b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "KIND  BACKLOG  IN FLIGHT  REDELIVERED  RETRYING  DEAD  OLDEST  WORKERS  BREAKER  FAILED  NEXT TRIAL  SCHEDULED\n"+
		"(no kinds: no consumers, workers, jobs or dead jobs in this namespace)\n"+
		"\nDLQ: 0 dead\n", r.stdout)
}

func TestStatsKinds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b)
	boomID := b.publish(t, "boom", "{}")
	_, r := b.status(t, boomID, "--wait", "20s")
	require.Equal(t, 4, r.code, r.stderr)
	b.publish(t, "ghost", "{}")
	b.publish(t, "ghost", "{}")

	m := b.stats(t)
	ghost := kindLine(t, m, "ghost")
	require.Len(t, ghost, len(jsonKeys(reflect.TypeFor[admin.KindStats]())))
	require.Equal(t, 2.0, ghost["backlog"])
	require.Equal(t, false, ghost["served"])
	require.Equal(t, 0.0, ghost["workers"])
	require.Equal(t, 0.0, ghost["consumers"])
	require.Equal(t, 0.0, ghost["retrying"], "with the ledger, counts are numbers")
	require.Positive(t, ghost["oldest_age_seconds"])
	require.Equal(t, "", ghost["breaker"], "no worker, no shared record: unknown")
	require.Nil(t, ghost["breaker_next_trial"])
	boom := kindLine(t, m, "boom")
	require.Equal(t, "closed", boom["breaker"])
	require.Equal(t, "fleet", boom["breaker_scope"])
	require.Nil(t, boom["breaker_next_trial"])
	require.Equal(t, 0.0, boom["breaker_failures"])
	require.Equal(t, 1.0, boom["dead"])
	require.Equal(t, true, boom["served"])
	require.Equal(t, 1.0, boom["workers"])
	require.Equal(t, 1.0, boom["consumers"])
	require.Equal(t, 0.0, boom["backlog"])
	require.Equal(t, map[string]any{"total": 1.0, "by_reason": map[string]any{"permanent_error": 1.0}}, m["dlq"])

	r = b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "KIND "), r.stdout)
	require.Regexp(t, `^ghost +2 +0 +0 +0 +0 +\S+ +0 +- +- +- +0 +orphan \(no worker\)\n$`, tableLine(t, r.stdout, "ghost"))
	// A permanent error is no downstream failure; the worker's entry may not count it yet.
	require.Regexp(t, `^boom +0 +0 +0 +0 +1 +- +1 +closed +(-|0/1 \(0%\)) +- +0\n$`, tableLine(t, r.stdout, "boom"))
	require.Contains(t, r.stdout, "\nDLQ: 1 dead\n  permanent_error  1\n")

	// Without the ledger the queue's numbers remain; the ledger's are null, "-" in the table.
	conn := []string{"--nats-url", b.natsURL, "--namespace", b.ns}
	r = runCLI(t, "", append(conn, "stats", "--json", "--database-url", "")...)
	require.Equal(t, 0, r.code, r.stderr)
	var noDB map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &noDB))
	require.Nil(t, kindLine(t, noDB, "ghost")["retrying"])
	require.Contains(t, kindLine(t, noDB, "ghost"), "retrying")
	require.Equal(t, 2.0, kindLine(t, noDB, "ghost")["backlog"])

	// Postgres unreachable: a warning, and the queue's numbers.
	r = runCLI(t, "", append(conn, "stats", "--database-url", "postgres://levee:hunter2@127.0.0.1:1/levee?sslmode=disable")...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "enqueue: warning: ")
	require.NotContains(t, r.stderr, "hunter2")
	require.Regexp(t, `^ghost +2 +0 +0 +- +0 .* - +orphan \(no worker\)\n$`, tableLine(t, r.stdout, "ghost"))
}

// cancelAfter is a writer that cancels a context once it has seen n times sep. (It does not
// embed its buffer, whose WriteString would bypass Write.)
type cancelAfter struct {
	buf    bytes.Buffer
	sep    string
	n      int
	cancel context.CancelFunc
}

func (w *cancelAfter) Write(p []byte) (int, error) {
	n, err := w.buf.Write(p)
	if strings.Count(w.buf.String(), w.sep) >= w.n {
		w.cancel()
	}
	return n, err
}

func (w *cancelAfter) String() string { return w.buf.String() }

func TestStatsWatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.publish(t, "ghost", "{}")
	conn := []string{"--nats-url", b.natsURL, "--database-url", b.dbURL, "--namespace", b.ns}
	for _, tt := range []struct {
		name string
		args []string
		sep  string
	}{
		{"json", []string{"stats", "--watch", "--interval", "20ms", "--json"}, "\n"},
		{"text", []string{"stats", "--watch", "--interval", "20ms"}, "DLQ: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stdout := &cancelAfter{sep: tt.sep, n: 3, cancel: cancel}
			var stderr bytes.Buffer
			code := run(ctx, append(tt.args, conn...), strings.NewReader(""), stdout, &stderr)
			require.Equal(t, 0, code, "interrupting --watch is its normal end: %s", stderr.String())
			require.Empty(t, stderr.String())
			out := stdout.String()
			require.NotContains(t, out, clearScreen, "not a terminal: no screen control")
			if tt.name == "json" {
				lines := strings.Split(strings.TrimSpace(out), "\n")
				require.Len(t, lines, 3)
				for _, l := range lines {
					var m map[string]any
					require.NoError(t, json.Unmarshal([]byte(l), &m), l)
					require.Equal(t, 1.0, kindLine(t, m, "ghost")["backlog"])
				}
				return
			}
			require.Equal(t, 3, strings.Count(out, "KIND "), out)
			require.Equal(t, 3, strings.Count(out, "namespace "+b.ns+" at "), out)
			require.Contains(t, out, "orphan (no worker)")
		})
	}
}

func TestStatsUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"stats", "extra"}, `unknown command "extra"`},
		{[]string{"stats", "--watch", "--interval", "0s"}, "invalid --interval 0s"},
		{[]string{"stats", "--watch", "--interval", "soon"}, "invalid argument"},
		{[]string{"stats", "--interval", "5s"}, "--interval applies to --watch"},
		{[]string{"stats", "--nats-password", "x"}, "--nats-password needs --nats-user"},
	} {
		r := runCLI(t, "", append(tt.args, "--nats-url", unreachableNATS)...)
		require.Equal(t, 2, r.code, tt.args)
		require.Contains(t, r.stderr, tt.want)
		require.Empty(t, r.stdout)
	}
	r := runCLI(t, "", "stats", "--nats-url", unreachableNATS, "--namespace", leveetest.Namespace(t))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "LEVEE_NATS_URL")
}

// capture runs `enqueue dlq capture-orphans args...` against the bundle's services. Until the
// dlq command attaches capture-orphans, it runs on a root of its own with the same flags.
func (b *bundle) capture(t *testing.T, args ...string) result {
	t.Helper()
	// The bundle's flags come first, so that args can override them.
	args = append([]string{"dlq", "capture-orphans", "--nats-url", b.natsURL, "--database-url", b.dbURL, "--namespace", b.ns}, args...)
	if cmd, _, err := newRootCmd().Find(args[:2]); err == nil && cmd.Name() == "capture-orphans" {
		return runCLI(t, "", args...)
	}
	var conn cli.Connection
	root := &cobra.Command{Use: "enqueue"}
	cli.AddConnectionFlags(root, &conn, levee.DefaultNATSURL, levee.DefaultDatabaseURL, levee.DefaultNamespace)
	dlq := &cobra.Command{Use: "dlq"}
	dlq.AddCommand(newDLQCaptureOrphansCmd(&conn))
	root.AddCommand(dlq)
	cli.Prepare(root)
	var stdout, stderr bytes.Buffer
	code := cli.Execute(context.Background(), root, args, &stdout, &stderr)
	t.Logf("enqueue %s\n  exit %d\n  stdout: %s\n  stderr: %s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func TestCaptureOrphansCLI(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b)

	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "missing --kind"},
		{[]string{"--kind", "Bad.Kind"}, `invalid kind "Bad.Kind"`},
		{[]string{"--kind", "ghost", "--limit", "-1"}, "invalid --limit -1"},
		{[]string{"--kind", "ghost", "extra"}, `unknown command "extra"`},
		{[]string{"--kind", "ghost", "--nats-password", "x"}, "--nats-password needs --nats-user"},
	} {
		r := b.capture(t, tt.args...)
		require.Equal(t, 2, r.code, tt.args)
		require.Contains(t, r.stderr, tt.want)
		require.Empty(t, r.stdout)
	}

	ids := []string{b.publish(t, "ghost", "{}"), b.publish(t, "ghost", "{}"), b.publish(t, "ghost", "{}")}
	r := b.capture(t, "--kind", "ghost", "--limit", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "captured 2 jobs of kind ghost with reason no_handler\n", r.stdout)
	r = b.capture(t, "--kind", "nothing")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "captured 0 jobs of kind nothing with reason no_handler\n", r.stdout)
	st, r := b.status(t, ids[0])
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "dead", st["state"])
	require.Equal(t, "no_handler", st["reason"])

	r = b.capture(t, "--kind", "ghost", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res), r.stdout)
	require.Equal(t, map[string]any{"kind": "ghost", "reason": "no_handler", "captured": 1.0, "ids": []any{ids[2]}}, res)
	require.Equal(t, 0.0, kindLine(t, b.stats(t), "ghost")["backlog"])
	require.Equal(t, 3.0, kindLine(t, b.stats(t), "ghost")["dead"])

	// A served kind is refused: exit 1, and the error says what to do.
	b.publish(t, "nobody", "{}")
	r = b.capture(t, "--kind", "ok")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, `capture orphans of kind "ok": a worker serves this kind: its durable consumer exists and 1 live worker serves it`)
	require.Contains(t, r.stderr, "pass --force")
	require.Empty(t, r.stdout)

	// Without the ledger it cannot record the jobs: exit 1.
	r = b.capture(t, "--kind", "nobody", "--database-url", "")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "needs the Postgres ledger")
	require.Equal(t, 1.0, kindLine(t, b.stats(t), "nobody")["backlog"])
}

func TestStatsAndCaptureHelp(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "stats", "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "Examples:")
	require.Contains(t, r.stdout, "LEVEE_NATS_URL")
	require.Contains(t, r.stdout, "orphan (no worker)")

	var buf bytes.Buffer
	cmd := newDLQCaptureOrphansCmd(&cli.Connection{})
	cmd.SetOut(&buf)
	require.NoError(t, cmd.Help())
	require.Contains(t, buf.String(), "Examples:")
	require.Contains(t, buf.String(), "1  error, or refused: a worker serves the kind")
}

// stats shows each kind's breaker as the fleet sees it: the shared record's state and next
// trial, the fleet's window, and the workers cut off from the record.
func TestStatsBreakers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	failing := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		return nil, errors.New("downstream down")
	})
	hold := levee.Backoff{Base: time.Hour, Max: time.Hour} // a failed job waits: no more calls
	for _, id := range []string{"w1", "w2"} {
		w, err := levee.NewWorker(levee.WorkerConfig{ID: id,
			NATSURL: b.natsURL, DatabaseURL: b.dbURL, Namespace: b.ns, SkipMigrate: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		require.NoError(t, err)
		require.NoError(t, w.Handle("pay", failing, levee.Policy{Concurrency: 1, Backoff: hold,
			Breaker: levee.BreakerPolicy{Window: 10 * time.Minute, MinCalls: 2, FailureRate: 0.5, OpenFor: time.Hour}}))
		if id == "w1" {
			require.NoError(t, w.Handle("own", failing, levee.Policy{Backoff: hold,
				Breaker: levee.BreakerPolicy{Window: 10 * time.Minute, MinCalls: 1, FailureRate: 1, OpenFor: time.Hour, Scope: "worker"}}))
		}
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- w.Run(wctx) }()
		t.Cleanup(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	b.publish(t, "pay", "{}")
	b.publish(t, "pay", "{}")
	b.publish(t, "own", "{}")

	var m map[string]any
	require.Eventually(t, func() bool {
		m = b.stats(t)
		pay, own := kindLine(t, m, "pay"), kindLine(t, m, "own")
		return pay["breaker"] == "open" && pay["breaker_calls"] == 2.0 && pay["workers"] == 2.0 &&
			own["breaker"] == "open" && own["breaker_calls"] == 1.0
	}, 30*time.Second, 100*time.Millisecond, "two failures in the fleet's window open pay's breaker")

	// The shared record is what stats shows.
	q := leveetest.Queue(t, b.natsURL, b.ns)
	store, err := fleet.New(q).Breakers(ctx, false)
	require.NoError(t, err)
	v, _, found, err := store.Get(ctx, "pay")
	require.NoError(t, err)
	require.True(t, found)
	rec := executor.ParseShared(v)
	pay := kindLine(t, m, "pay")
	require.Len(t, pay, len(jsonKeys(reflect.TypeFor[admin.KindStats]())))
	require.Equal(t, "fleet", pay["breaker_scope"])
	require.Equal(t, 2.0, pay["breaker_failures"])
	require.Equal(t, 1.0, pay["breaker_failure_rate"])
	require.Equal(t, rec.Until.UTC().Format(time.RFC3339Nano), pay["breaker_next_trial"])
	require.Equal(t, rec.Since.UTC().Format(time.RFC3339Nano), pay["breaker_since"])
	require.InDelta(t, time.Hour.Seconds(), pay["breaker_next_trial_seconds"], 60)
	require.Equal(t, "2 of 2 calls failed in the fleet's window", pay["breaker_reason"])
	require.Contains(t, []any{"w1", "w2"}, pay["breaker_by"])
	require.Equal(t, 0.0, pay["breaker_cut_off"])
	require.Equal(t, 0.0, pay["breaker_trials"])
	own := kindLine(t, m, "own")
	require.Equal(t, "worker", own["breaker_scope"])
	require.Equal(t, 1.0, own["breaker_failures"])
	require.InDelta(t, time.Hour.Seconds(), own["breaker_next_trial_seconds"], 60)
	require.Nil(t, own["breaker_since"], "a worker's own breaker has no shared record")

	r := b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "  WORKERS  BREAKER  FAILED      NEXT TRIAL  SCHEDULED\n")
	require.Regexp(t, `^pay +0 +\d +0 +\d +0 +\S+ +2 +open +2/2 \(100%\) +in 59m\d\ds +0\n$`, tableLine(t, r.stdout, "pay"))
	require.Regexp(t, `^own +0 +\d +0 +\d +0 +\S+ +1 +open +1/1 \(100%\) +in 59m\d\ds +0\n$`, tableLine(t, r.stdout, "own"))

	// Workers that cannot reach the shared record decide alone, and stats says so.
	js, err := jetstream.New(leveetest.Conn(t, b.natsURL))
	require.NoError(t, err)
	require.NoError(t, js.DeleteKeyValue(ctx, strings.ToUpper(b.ns)+"_BREAKERS"))
	require.Eventually(t, func() bool {
		m = b.stats(t)
		return kindLine(t, m, "pay")["breaker_cut_off"] == 2.0
	}, 30*time.Second, 200*time.Millisecond, "both workers are cut off from the record")
	pay = kindLine(t, m, "pay")
	require.Equal(t, "open", pay["breaker"], "the workers' own view while they decide alone")
	require.Equal(t, "fleet", pay["breaker_scope"])
	r = b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	// Each cut-off worker reports its own window, as far as it has heard the other's.
	require.Regexp(t, `  open +[12]/[12] \(100%\) +in 59m\d\ds +0 +2 of 2 workers cut off from the fleet's breaker\n$`, tableLine(t, r.stdout, "pay"))
}

func TestStatsBreakerColumns(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	until := now.Add(1400 * time.Millisecond)
	s := &admin.Stats{GeneratedAt: now, DLQ: admin.DLQStats{ByReason: map[string]int{}}, Kinds: []admin.KindStats{
		{Kind: "a", Workers: 2, Served: true, Breaker: "open", BreakerScope: "fleet", BreakerCalls: 4, BreakerFailures: 3,
			BreakerFailureRate: 0.75, BreakerNextTrial: &until, BreakerNextTrialSeconds: 1.4},
		{Kind: "b", Workers: 2, Served: true, Breaker: "half-open", BreakerScope: "fleet", BreakerCalls: 4, BreakerFailures: 4,
			BreakerFailureRate: 1, BreakerNextTrial: &now, BreakerTrials: 1, BreakerTrialsOK: 2, BreakerCutOff: 1},
		{Kind: "c", Workers: 1, Served: true, Breaker: "half-open", BreakerScope: "worker", BreakerNextTrial: &now},
		{Kind: "d", Workers: 1, Served: true, Breaker: "closed", BreakerScope: "fleet", BreakerCalls: 12, BreakerFailures: 1, BreakerFailureRate: 0.0833},
		{Kind: "e", Workers: 1, Served: true, Breaker: "open", BreakerScope: "worker", BreakerNextTrialSeconds: 187},
	}}
	var out bytes.Buffer
	require.NoError(t, printStats(&out, s, false))
	require.Equal(t, ""+
		"KIND  BACKLOG  IN FLIGHT  REDELIVERED  RETRYING  DEAD  OLDEST  WORKERS  BREAKER    FAILED      NEXT TRIAL         SCHEDULED\n"+
		"a     0        0          0            -         0     -       2        open       3/4 (75%)   in 1.4s            -\n"+
		"b     0        0          0            -         0     -       2        half-open  4/4 (100%)  now (1 out, 2 ok)  -          1 of 2 workers cut off from the fleet's breaker\n"+
		"c     0        0          0            -         0     -       1        half-open  -           now                -\n"+
		"d     0        0          0            -         0     -       1        closed     1/12 (8%)   -                  -\n"+
		"e     0        0          0            -         0     -       1        open       -           in 3m07s           -\n"+
		"\nDLQ: 0 dead\n", out.String())
}
