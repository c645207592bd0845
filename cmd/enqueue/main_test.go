package main

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
)

// unreachableNATS is a URL nothing listens on.
const unreachableNATS = "nats://127.0.0.1:1"

// result is what one in-process run of the CLI did.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the CLI in-process with stdin and args.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	t.Logf("enqueue %s\n  exit %d\n  stdout: %s\n  stderr: %s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// bundle is a fresh namespace on the test services: a migrated ledger schema and streams that
// are dropped at cleanup.
type bundle struct {
	natsURL, dbURL, ns string
}

func setup(t *testing.T) *bundle {
	t.Helper()
	b := &bundle{natsURL: leveetest.NATSURL(t), dbURL: leveetest.DatabaseURL(t), ns: leveetest.Namespace(t)}
	leveetest.Ledger(t, b.ns)
	leveetest.Queue(t, b.natsURL, b.ns)
	return b
}

// run runs the CLI against the bundle's services and namespace.
func (b *bundle) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	args = append(args, "--nats-url", b.natsURL, "--database-url", b.dbURL, "--namespace", b.ns)
	return runCLI(t, stdin, args...)
}

// publish publishes one job and returns its id.
func (b *bundle) publish(t *testing.T, kind, payload string, args ...string) string {
	t.Helper()
	r := b.run(t, "", append([]string{"publish", kind, payload}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	return strings.TrimSpace(r.stdout)
}

// status returns job id's status as `status --json` prints it.
func (b *bundle) status(t *testing.T, id string, args ...string) (map[string]any, result) {
	t.Helper()
	r := b.run(t, "", append([]string{"status", id, "--json"}, args...)...)
	if r.stdout == "" {
		return nil, r
	}
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m), r.stdout)
	return m, r
}

// jsonKeys returns the JSON names of t's fields.
func jsonKeys(t reflect.Type) []string {
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// TestUsageErrors checks mistakes that exit 2 before connecting anywhere: NATS is
// unreachable here, so a command that got as far as connecting would exit 1.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"invalid JSON", "", []string{"publish", "noop", "{bad"}, "payload is not valid JSON"},
		{"invalid JSON on stdin", "[1,", []string{"publish", "noop", "-"}, "payload is not valid JSON"},
		{"empty payload", "", []string{"publish", "noop", ""}, "payload is empty"},
		{"invalid kind", "", []string{"publish", "Bad.Kind", "{}"}, `invalid kind "Bad.Kind"`},
		{"unknown flag", "", []string{"publish", "noop", "{}", "--bogus"}, "unknown flag: --bogus"},
		{"oversize payload", "", []string{"publish", "noop", `{"aaaaaaaaaa": 1}`, "--max-payload", "10"}, "over the --max-payload limit of 10 bytes"},
		{"oversize stdin", strings.Repeat(" ", 100) + "{}", []string{"publish", "noop", "-", "--max-payload", "10"}, "over the --max-payload limit of 10 bytes"},
		{"bad max-payload", "", []string{"publish", "noop", "{}", "--max-payload", "0"}, "invalid --max-payload"},
		{"bad max-attempts", "", []string{"publish", "noop", "{}", "--max-attempts", "-1"}, "invalid --max-attempts"},
		{"bad id", "", []string{"publish", "noop", "{}", "--id", "a.b"}, "invalid job id"},
		{"missing payload", "", []string{"publish", "noop"}, "missing PAYLOAD"},
		{"too many args", "", []string{"publish", "noop", "{}", "extra"}, "accepts between 1 and 2 arg(s)"},
		{"payload and file", "", []string{"publish", "noop", "{}", "--file", "x.jsonl"}, "not both"},
		{"id with file", "", []string{"publish", "noop", "--file", "x.jsonl", "--id", "x"}, "with --file"},
		{"not an int", "", []string{"publish", "noop", "{}", "--max-attempts", "many"}, "invalid argument"},
		{"status without id", "", []string{"status"}, "accepts 1 arg(s)"},
		{"status bad id", "", []string{"status", "a*b"}, "invalid job id"},
		{"status bad wait", "", []string{"status", "x", "--wait", "soon"}, "invalid argument"},
		{"bad namespace", "", []string{"publish", "noop", "{}", "--namespace", "Bad-NS"}, "invalid namespace"},
		{"no command", "", []string{}, "enqueue needs a command"},
		{"unknown command", "", []string{"pubish"}, `unknown command "pubish"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, tt.stdin, append(tt.args, "--nats-url", unreachableNATS)...)
			require.Equal(t, 2, r.code)
			require.Contains(t, r.stderr, tt.want)
			require.True(t, strings.HasPrefix(r.stderr, "enqueue: "), r.stderr)
			require.Empty(t, r.stdout)
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"publish", "--help"}, {"status", "--help"}, {"help", "status"}} {
		r := runCLI(t, "", args...)
		require.Equal(t, 0, r.code, args)
		require.Contains(t, r.stdout, "Examples:", args)
		require.Contains(t, r.stdout, "LEVEE_NATS_URL", args)
	}
	r := runCLI(t, "", "status", "--help")
	for _, code := range []string{"3  unknown job id", "4  the job is dead", "5  --wait ended"} {
		require.Contains(t, r.stdout, code)
	}
}

func TestUnreachableServices(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	for _, args := range [][]string{
		{"publish", "noop", "{}", "--nats-url", "nats://levee:s3cret@127.0.0.1:1"},
		{"status", "01ABC", "--nats-url", "nats://levee:s3cret@127.0.0.1:1"},
	} {
		r := runCLI(t, "", append(args, "--namespace", ns)...)
		require.Equal(t, 1, r.code)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		require.Contains(t, r.stderr, "connect to NATS")
		require.Contains(t, r.stderr, "LEVEE_NATS_URL")
		require.Contains(t, r.stderr, "--nats-url")
		require.NotContains(t, r.stderr, "s3cret")
	}

	natsURL := leveetest.NATSURL(t)
	r := runCLI(t, "", "status", "01ABC", "--nats-url", natsURL, "--namespace", ns,
		"--database-url", "postgres://levee:hunter2@127.0.0.1:1/levee?sslmode=disable")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "LEVEE_DATABASE_URL")
	require.NotContains(t, r.stderr, "hunter2")
}

// TestEnvNATSURL cannot run in parallel: it sets an environment variable.
func TestEnvNATSURL(t *testing.T) {
	t.Setenv("LEVEE_NATS_URL", unreachableNATS)
	r := runCLI(t, "", "publish", "noop", "{}", "--namespace", leveetest.Namespace(t))
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, unreachableNATS)
}

// Both binaries answer --version, complete in shells, and suggest the command meant.
func TestVersionCompletionAndSuggestions(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "", "--version")
	require.Equal(t, 0, r.code)
	require.Regexp(t, `^enqueue \S+.* go1\.\d+`, r.stdout)
	r = runCLI(t, "", "completion", "bash")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "bash completion")
	for args, want := range map[string]string{"pubish": `did you mean "publish"?`, "dlq lst": `did you mean "list"?`, "stat": `did you mean "stats"?`} {
		r = runCLI(t, "", strings.Fields(args)...)
		require.Equal(t, 2, r.code, args)
		require.Contains(t, r.stderr, want, args)
	}
}
