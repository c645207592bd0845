package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
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
	require.Len(t, m, len(jsonKeys(reflect.TypeFor[levee.Stats]())))
	require.Equal(t, []any{}, m["kinds"])
	require.Equal(t, map[string]any{"total": 0.0, "by_reason": map[string]any{}}, m["dlq"])
	require.Equal(t, false, m["scan_capped"])
	require.NotEmpty(t, m["generated_at"])

	r := b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "KIND  BACKLOG  IN FLIGHT  REDELIVERED  RETRYING  DEAD  OLDEST  WORKERS\n"+
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
	require.Len(t, ghost, len(jsonKeys(reflect.TypeFor[levee.KindStats]())))
	require.Equal(t, 2.0, ghost["backlog"])
	require.Equal(t, false, ghost["served"])
	require.Equal(t, 0.0, ghost["workers"])
	require.Equal(t, 0.0, ghost["consumers"])
	require.Equal(t, 0.0, ghost["retrying"], "with the ledger, counts are numbers")
	require.Positive(t, ghost["oldest_age_seconds"])
	boom := kindLine(t, m, "boom")
	require.Equal(t, 1.0, boom["dead"])
	require.Equal(t, true, boom["served"])
	require.Equal(t, 1.0, boom["workers"])
	require.Equal(t, 1.0, boom["consumers"])
	require.Equal(t, 0.0, boom["backlog"])
	require.Equal(t, map[string]any{"total": 1.0, "by_reason": map[string]any{"permanent_error": 1.0}}, m["dlq"])

	r = b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.True(t, strings.HasPrefix(r.stdout, "KIND "), r.stdout)
	require.Regexp(t, `^ghost +2 +0 +0 +0 +0 +\S+ +0 +orphan \(no worker\)\n$`, tableLine(t, r.stdout, "ghost"))
	require.Regexp(t, `^boom +0 +0 +0 +0 +1 +- +1\n$`, tableLine(t, r.stdout, "boom"))
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
	require.Regexp(t, `^ghost +2 +0 +0 +- +0 `, tableLine(t, r.stdout, "ghost"))
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
