package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name, or rewrites the file with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		require.NoError(t, os.MkdirAll("testdata", 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test -run %s -update to create it", t.Name())
	require.Equal(t, string(want), got, "output differs from %s (go test -update rewrites it)", path)
}

// goldenNow is the time the golden outputs are rendered at.
var goldenNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// goldenJobs are dead jobs of every shape the views must handle.
func goldenJobs() []leveetype.DeadJob {
	return []leveetype.DeadJob{
		{
			ID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", Kind: "charge", Key: "order-1234", Reason: "max_attempts",
			Attempts: 5, LastError: "http POST http://127.0.0.1:8081/charge: 503 Service Unavailable: {\"error\":\"upstream timeout\",\n\"retry\":true}",
			FirstFailedAt: goldenNow.Add(-3*24*time.Hour - 5*time.Hour), FailedAt: goldenNow.Add(-3*24*time.Hour - 2*time.Hour),
			Worker:  "worker-1-4242",
			Payload: json.RawMessage(`{"url":"http://127.0.0.1:8081/charge","method":"POST","body":{"amount":1200,"currency":"EUR","items":[1,2]}}`),
			Headers: map[string]string{
				"Nats-Msg-Id": "dlq:01JC9X3V8J4T6M2Q7R5W0YBZ1N:17", "Levee-Enqueued-At": "2029-12-30T00:00:00Z",
				"Levee-Max-Attempts": "5", "Nats-Expected-Stream": "LEVEE_DLQ", queue.HeaderJobID: "01JC9X3V8J4T6M2Q7R5W0YBZ1N", queue.HeaderReason: "max_attempts",
				queue.HeaderLastError: "hidden: shown as last_error",
			},
			Sequence: 3,
		},
		{
			ID: "malformed-1", Kind: "charge", Key: "malformed-1", Reason: "malformed", Attempts: 0,
			LastError:     "malformed job: payload is not valid JSON: invalid character 'o' in literal null (expecting 'u')",
			FirstFailedAt: goldenNow.Add(-2 * time.Hour), FailedAt: goldenNow.Add(-2 * time.Hour),
			Worker:   "worker-2-77",
			Payload:  json.RawMessage(`"not json"`),
			Headers:  map[string]string{"Nats-Msg-Id": "dlq:malformed-1:9"},
			Sequence: 8,
		},
		{
			ID: "01JC9X4B2C8D0E6F1G3H5J7K9M", Kind: "email", Key: "welcome-ada", Reason: "permanent_error", Attempts: 1,
			LastError:     "400 Bad Request: adresse « ada@domaine » invalide — vérifiez le domaine et réessayez plus tard",
			FirstFailedAt: goldenNow.Add(-3 * time.Minute), FailedAt: goldenNow.Add(-3 * time.Minute),
			Payload:  json.RawMessage(`{"to":"ada@domaine"}`),
			Sequence: 12,
		},
		{
			ID: "01JC9X5Z", Kind: "noop", Key: "01JC9X5Z", Reason: "url_not_allowed", Attempts: 1,
			FailedAt: goldenNow.Add(-42 * time.Second), FirstFailedAt: goldenNow.Add(-42 * time.Second),
			Payload: json.RawMessage(`null`), Sequence: 13,
		},
	}
}

func TestDLQListGolden(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	table := newDeadJobTable(&buf, goldenNow)
	for _, dj := range goldenJobs() {
		table.add(dj)
	}
	require.NoError(t, table.flush())
	golden(t, "dlq_list.golden", buf.String())
}

func TestDLQShowGolden(t *testing.T) {
	t.Parallel()
	jobs := goldenJobs()
	for _, tt := range []struct {
		file string
		job  leveetype.DeadJob
	}{
		{"dlq_show.golden", jobs[0]},
		{"dlq_show_malformed.golden", jobs[1]},
		{"dlq_show_minimal.golden", jobs[3]},
	} {
		var buf bytes.Buffer
		require.NoError(t, printDeadJob(&buf, &tt.job, goldenNow))
		golden(t, tt.file, buf.String())
	}
}

func TestOneLineTruncated(t *testing.T) {
	t.Parallel()
	require.Equal(t, "a b c", oneLineTruncated("a\n b\r\n\tc", 60))
	require.Equal(t, "abcd…", oneLineTruncated("abcdefgh", 5))
	require.Equal(t, "éééé…", oneLineTruncated("éééééééé", 5), "cut on characters, not bytes")
	require.Equal(t, "abcde", oneLineTruncated("abcde", 5))
}

func TestConfirm(t *testing.T) {
	t.Parallel()
	for answer, want := range map[string]bool{"3\n": true, " 3 \n": true, "3": true, "y\n": false, "yes\n": false, "30\n": false, "": false} {
		var prompt bytes.Buffer
		ok, err := confirm(strings.NewReader(answer), &prompt, 3)
		require.NoError(t, err)
		require.Equal(t, want, ok, "answer %q", answer)
		require.True(t, strings.HasPrefix(prompt.String(), "purge 3 dead jobs? type the number to confirm: "))
	}
}

// TestDLQUsageErrors checks mistakes that exit 2 before connecting anywhere: NATS is
// unreachable here, so a command that got as far as connecting would exit 1.
func TestDLQUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no subcommand", []string{"dlq"}, "enqueue dlq needs a command"},
		{"unknown subcommand", []string{"dlq", "lst"}, `unknown command "lst"`},
		{"list since abc", []string{"dlq", "list", "--since", "abc"}, `invalid --since "abc": give a duration such as 90s, 15m, 1h30m or 30d`},
		{"list older-than bad", []string{"dlq", "list", "--older-than", "5x"}, `invalid --older-than "5x"`},
		{"list negative since", []string{"dlq", "list", "--since", "-1h"}, `invalid --since "-1h"`},
		{"list empty window", []string{"dlq", "list", "--since", "1h", "--older-than", "2h"}, "select nothing"},
		{"list bad kind", []string{"dlq", "list", "--kind", "Bad.Kind"}, "invalid --kind"},
		{"list unknown reason", []string{"dlq", "list", "--reason", "bogus"}, `invalid --reason: unknown reason "bogus": use one of cancelled,`},
		{"purge unknown reason", []string{"dlq", "purge", "--all", "--reason", "max_attempt", "--yes"}, `unknown reason "max_attempt"`},
		{"list bad limit", []string{"dlq", "list", "--limit", "-1"}, "invalid --limit -1"},
		{"list args", []string{"dlq", "list", "x"}, "unknown command \"x\""},
		{"show no id", []string{"dlq", "show"}, "accepts 1 arg(s)"},
		{"show bad id", []string{"dlq", "show", "a*b"}, "invalid job id"},
		{"replay rate fast", []string{"dlq", "replay", "--all", "--rate", "fast"}, `invalid --rate: invalid rate "fast"`},
		{"replay ids with all", []string{"dlq", "replay", "01A", "--all"}, "give job IDs or --all, not both"},
		{"replay neither", []string{"dlq", "replay"}, "give the IDs of dead jobs, or --all"},
		{"replay filter with ids", []string{"dlq", "replay", "01A", "--kind", "charge"}, "with IDs, leave them out"},
		{"replay since abc", []string{"dlq", "replay", "--all", "--since", "abc"}, `invalid --since "abc"`},
		{"replay bad id", []string{"dlq", "replay", "a.b"}, "invalid job id"},
		{"replay payload two ids", []string{"dlq", "replay", "01A", "01B", "--payload", "{}"}, "give exactly one ID"},
		{"replay payload all", []string{"dlq", "replay", "--all", "--payload", "{}"}, "give exactly one ID"},
		{"replay payload not json", []string{"dlq", "replay", "01A", "--payload", "{bad"}, "payload is not valid JSON"},
		{"replay allow without payload", []string{"dlq", "replay", "01A", "--allow-payload-change"}, "--allow-payload-change goes with --payload"},
		{"purge without yes", []string{"dlq", "purge", "--all"}, "purge needs --yes"},
		{"purge ids without yes", []string{"dlq", "purge", "01A"}, "purge needs --yes"},
		{"purge ids with all", []string{"dlq", "purge", "01A", "--all", "--yes"}, "give job IDs or --all, not both"},
		{"purge neither", []string{"dlq", "purge", "--yes"}, "give the IDs of dead jobs, or --all"},
		{"purge older-than bad", []string{"dlq", "purge", "--all", "--older-than", "30 days", "--yes"}, `invalid --older-than "30 days"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, "", append(tt.args, "--nats-url", unreachableNATS)...)
			require.Equal(t, 2, r.code)
			require.Contains(t, r.stderr, tt.want)
			require.True(t, strings.HasPrefix(r.stderr, "enqueue: "), r.stderr)
			require.Contains(t, r.stderr, "--help' for usage.")
			require.Empty(t, r.stdout)
		})
	}
}

func TestDLQHelp(t *testing.T) {
	t.Parallel()
	for _, sub := range []string{"list", "show", "replay", "purge"} {
		r := runCLI(t, "", "dlq", sub, "--help")
		require.Equal(t, 0, r.code, sub)
		require.Contains(t, r.stdout, "Examples:", sub)
		require.Contains(t, r.stdout, "Exit codes:", sub)
		require.Contains(t, r.stdout, "LEVEE_NATS_URL", sub)
	}
	r := runCLI(t, "", "dlq", "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "3  a job id that is not in the dead-letter queue")
	r = runCLI(t, "", "--help")
	require.Contains(t, r.stdout, "dlq")
}

func TestDLQUnreachableServices(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	const natsURL = "nats://levee:s3cret@127.0.0.1:1"
	for _, args := range [][]string{
		{"dlq", "list"},
		{"dlq", "list", "--json"},
		{"dlq", "show", "01ABC"},
		{"dlq", "replay", "01ABC"},
		{"dlq", "replay", "--all", "--dry-run"},
		{"dlq", "purge", "--all", "--yes"},
	} {
		r := runCLI(t, "", append(args, "--namespace", ns, "--nats-url", natsURL)...)
		require.Equal(t, 1, r.code, args)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		require.Contains(t, r.stderr, "connect to NATS")
		require.Contains(t, r.stderr, "LEVEE_NATS_URL")
		require.NotContains(t, r.stderr, "s3cret")
		require.Empty(t, r.stdout)
	}

	// Replay writes the ledger: an unreachable Postgres is named.
	r := runCLI(t, "", "dlq", "replay", "01ABC", "--namespace", ns, "--nats-url", leveetest.NATSURL(t),
		"--database-url", "postgres://levee:hunter2@127.0.0.1:1/levee?sslmode=disable")
	require.Equal(t, 1, r.code)
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
	require.Contains(t, r.stderr, "LEVEE_DATABASE_URL")
	require.NotContains(t, r.stderr, "hunter2")

	// The other commands need only NATS.
	r = runCLI(t, "", "dlq", "list", "--namespace", ns, "--nats-url", leveetest.NATSURL(t),
		"--database-url", "postgres://levee:hunter2@127.0.0.1:1/levee?sslmode=disable")
	require.Equal(t, 0, r.code, r.stderr)
}

// dead is one dead job to put in a bundle's DLQ.
type dead struct {
	kind, id, reason string
	age              time.Duration // how long ago it died
	payload          string        // default {"n":1}
}

// seedDLQ copies jobs straight to the bundle's DLQ, as a worker would, dead for the given ages.
// Their keys have no ledger row.
func (b *bundle) seedDLQ(t *testing.T, jobs ...dead) {
	t.Helper()
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.natsURL), Namespace: b.ns})
	require.NoError(t, err)
	for i, j := range jobs {
		payload := j.payload
		if payload == "" {
			payload = `{"n":1}`
		}
		env, err := queue.NewEnvelope(j.kind, j.id, "", []byte(payload), 0, queue.DefaultMaxPayload)
		require.NoError(t, err)
		died := time.Now().Add(-j.age)
		require.NoError(t, q.DeadLetter(context.Background(), env, env.Payload, q.Names().Msg(env).Header, queue.DeadInfo{
			Reason: j.reason, Attempts: 1, LastError: j.reason + " of " + j.id, Worker: "seed",
			FirstFailedAt: died, FailedAt: died, SourceSeq: uint64(i + 1),
		}))
	}
}

// listIDs returns the ids `dlq list --json` prints with args.
func (b *bundle) listIDs(t *testing.T, args ...string) []string {
	t.Helper()
	r := b.run(t, "", append([]string{"dlq", "list", "--json", "--limit", "0"}, args...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var ids []string
	for line := range strings.Lines(r.stdout) {
		var dj leveetype.DeadJob
		require.NoError(t, json.Unmarshal([]byte(line), &dj), line)
		ids = append(ids, dj.ID)
	}
	return ids
}

func TestDLQListFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.run(t, "", "dlq", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "no dead jobs\n", r.stderr)
	require.Empty(t, r.stdout)
	r = b.run(t, "", "dlq", "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stdout)
	require.Empty(t, r.stderr)

	b.seedDLQ(t,
		dead{kind: "a", id: "a-perm-old", reason: "permanent_error", age: 40 * 24 * time.Hour},
		dead{kind: "a", id: "a-max-old", reason: "max_attempts", age: 10 * 24 * time.Hour},
		dead{kind: "b", id: "b-perm-2h", reason: "permanent_error", age: 2 * time.Hour},
		dead{kind: "a", id: "a-perm-new", reason: "permanent_error", age: time.Minute},
	)

	all := []string{"a-perm-old", "a-max-old", "b-perm-2h", "a-perm-new"}
	require.Equal(t, all, b.listIDs(t), "oldest first (stream order)")
	require.Equal(t, []string{"a-perm-old", "a-max-old", "a-perm-new"}, b.listIDs(t, "--kind", "a"))
	require.Equal(t, []string{"a-perm-old", "b-perm-2h", "a-perm-new"}, b.listIDs(t, "--reason", "permanent_error"))
	require.Equal(t, []string{"b-perm-2h", "a-perm-new"}, b.listIDs(t, "--since", "1d"))
	require.Equal(t, []string{"a-perm-new"}, b.listIDs(t, "--since", "1h"))
	require.Equal(t, []string{"a-perm-old", "a-max-old"}, b.listIDs(t, "--older-than", "7d"))
	require.Equal(t, []string{"a-perm-old"}, b.listIDs(t, "--older-than", "30d", "--kind", "a", "--reason", "permanent_error"))
	require.Equal(t, []string{"a-max-old", "b-perm-2h"}, b.listIDs(t, "--since", "20d", "--older-than", "1h"))
	require.Empty(t, b.listIDs(t, "--kind", "c"))

	r = b.run(t, "", "dlq", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, r.stderr)
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	require.Len(t, lines, 5)
	require.Regexp(t, `^ID\s+KIND\s+REASON\s+ATTEMPTS\s+AGE\s+LAST ERROR$`, lines[0])
	require.Regexp(t, `^a-perm-old\s+a\s+permanent_error\s+1\s+40d00h\s+permanent_error of a-perm-old$`, lines[1])
	require.Regexp(t, `^b-perm-2h\s+b\s+permanent_error\s+1\s+(1h59m|2h00m)\s+`, lines[3])
	require.Regexp(t, `^a-perm-new\s+a\s+permanent_error\s+1\s+(59s|1m0\ds)\s+`, lines[4])

	r = b.run(t, "", "dlq", "list", "--limit", "2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Len(t, strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"), 3)
	require.Equal(t, "showing the oldest 2 dead jobs; more match (--limit 0 shows all)\n", r.stderr)

	// JSON lines carry every DeadJob key, the payload as JSON.
	r = b.run(t, "", "dlq", "list", "--json", "--kind", "b")
	require.Equal(t, 0, r.code, r.stderr)
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &m))
	for _, k := range jsonKeys(reflect.TypeFor[leveetype.DeadJob]()) {
		require.Contains(t, m, k)
	}
	require.Equal(t, map[string]any{"n": float64(1)}, m["payload"])
	require.Equal(t, "b", m["kind"])
}

func TestDLQShow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seedDLQ(t, dead{kind: "charge", id: "show-me", reason: "permanent_error", age: time.Hour,
		payload: `{"amount": 1200, "items": ["a", "b"]}`})

	r := b.run(t, "", "dlq", "show", "show-me")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "id:              show-me\n")
	require.Contains(t, r.stdout, "reason:          permanent_error\n")
	require.Contains(t, r.stdout, "worker:          seed\n")
	require.Contains(t, r.stdout, "(1h00m ago)\n")
	require.Contains(t, r.stdout, "headers:\n  Levee-Enqueued-At:")
	require.Contains(t, r.stdout, "payload:\n  {\n    \"amount\": 1200,\n    \"items\": [\n      \"a\",")

	r = b.run(t, "", "dlq", "show", "show-me", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var dj leveetype.DeadJob
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &dj))
	require.Equal(t, "show-me", dj.ID)
	require.JSONEq(t, `{"amount":1200,"items":["a","b"]}`, string(dj.Payload))

	for _, args := range [][]string{{"dlq", "show", "01NOSUCHJOB"}, {"dlq", "show", "01NOSUCHJOB", "--json"}} {
		r = b.run(t, "", args...)
		require.Equal(t, 3, r.code)
		require.Equal(t, "enqueue: job 01NOSUCHJOB is not in the dead-letter queue\n", r.stderr)
		require.Empty(t, r.stdout)
	}
}

func TestDLQPurge(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seedDLQ(t,
		dead{kind: "a", id: "a-perm-1", reason: "permanent_error", age: 40 * 24 * time.Hour},
		dead{kind: "a", id: "a-perm-2", reason: "permanent_error", age: time.Hour},
		dead{kind: "a", id: "a-max", reason: "max_attempts", age: time.Hour},
		dead{kind: "b", id: "b-perm", reason: "permanent_error", age: time.Hour},
		dead{kind: "b", id: "b-max", reason: "max_attempts", age: 40 * 24 * time.Hour},
	)

	r := b.run(t, "", "dlq", "purge", "--all", "--kind", "a", "--reason", "permanent_error", "--dry-run")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "would purge a-perm-1 (a, permanent_error)\nwould purge a-perm-2 (a, permanent_error)\n", r.stdout)
	require.Len(t, b.listIDs(t), 5, "a dry run changes nothing")

	r = b.run(t, "", "dlq", "purge", "--all", "--kind", "a", "--reason", "permanent_error", "--yes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "purged a-perm-1\npurged a-perm-2\n", r.stdout)
	require.Equal(t, "purged 2 dead jobs\n", r.stderr)
	require.Equal(t, []string{"a-max", "b-perm", "b-max"}, b.listIDs(t))

	r = b.run(t, "", "dlq", "purge", "--all", "--older-than", "30d", "--yes", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"id":"b-max","kind":"b","key":"b-max","reason":"max_attempts","purged":true}`, r.stdout)
	require.Equal(t, []string{"a-max", "b-perm"}, b.listIDs(t))

	r = b.run(t, "", "dlq", "purge", "--all", "--kind", "zzz", "--yes")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "no dead jobs match\n", r.stderr)

	// Unknown ids are reported; the known ones are purged; the exit code is 3.
	r = b.run(t, "", "dlq", "purge", "01NOSUCHJOB", "a-max", "--yes")
	require.Equal(t, 3, r.code, r.stderr)
	require.Equal(t, "purged a-max\n", r.stdout)
	require.Equal(t, "enqueue: job 01NOSUCHJOB is not in the dead-letter queue\npurged 1 dead job\n", r.stderr)
	require.Equal(t, []string{"b-perm"}, b.listIDs(t))

	r = b.run(t, "", "dlq", "purge", "a-max", "--yes")
	require.Equal(t, 3, r.code, "purged already: %s", r.stderr)
}

func TestDLQReplayUnknownAndPayload(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.seedDLQ(t,
		dead{kind: "charge", id: "r-1", reason: "permanent_error", age: time.Hour, payload: `{"amount":1}`},
		dead{kind: "charge", id: "r-2", reason: "permanent_error", age: time.Hour},
	)

	r := b.run(t, "", "dlq", "replay", "01NOSUCHJOB")
	require.Equal(t, 3, r.code)
	require.Equal(t, "enqueue: job 01NOSUCHJOB is not in the dead-letter queue\nreplayed 0 jobs (0 failed)\n", r.stderr)

	r = b.run(t, "", "dlq", "replay", "r-1", "--payload", `{"amount": 2}`)
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "enqueue: job r-1 was not replayed: --payload differs from the job's payload")
	require.Contains(t, r.stderr, "add --allow-payload-change")
	require.Contains(t, r.stderr, "replayed 0 jobs (1 failed)\n")
	require.Equal(t, []string{"r-1", "r-2"}, b.listIDs(t), "a failed replay leaves the job in the DLQ")

	r = b.run(t, "", "dlq", "replay", "r-1", "--payload", `{ "amount" : 1 }`, "--json")
	require.Equal(t, 0, r.code, "the same payload, however spaced, is no change: %s", r.stderr)
	require.JSONEq(t, `{"id":"r-1","kind":"charge","key":"r-1","key_state":"","replayed":true}`, r.stdout)

	r = b.run(t, "", "dlq", "replay", "r-2", "01NOSUCHJOB", "--dry-run")
	require.Equal(t, 3, r.code)
	require.Equal(t, "would replay r-2 (charge, permanent_error)\n", r.stdout)
	require.Equal(t, []string{"r-2"}, b.listIDs(t))

	r = b.run(t, "", "dlq", "replay", "r-2", "--payload", `{"n": 2}`, "--allow-payload-change")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "replayed r-2\n", r.stdout)
	require.Empty(t, b.listIDs(t))

	st, r := b.status(t, "r-2")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "queued", st["state"], "the replayed job waits in the work stream")
}

// TestDLQReplayRate replays 10 jobs at 5/s: the bucket holds one token, so the 10th is
// republished at least 9 × 200ms after the first.
func TestDLQReplayRate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var jobs []dead
	for _, id := range []string{"p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9"} {
		jobs = append(jobs, dead{kind: "paced", id: id, reason: "max_attempts", age: time.Minute})
	}
	b.seedDLQ(t, jobs...)

	start := time.Now()
	r := b.run(t, "", "dlq", "replay", "--all", "--rate", "5/s")
	elapsed := time.Since(start)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "replayed 10 jobs (0 failed)\n", r.stderr)
	require.GreaterOrEqual(t, elapsed, 1600*time.Millisecond)

	// When the work stream stored each replayed job.
	js, err := jetstream.New(leveetest.Conn(t, b.natsURL))
	require.NoError(t, err)
	names, err := queue.NewNames(b.ns)
	require.NoError(t, err)
	stream, err := js.Stream(context.Background(), names.JobsStream())
	require.NoError(t, err)
	var stored []time.Time
	for seq := uint64(1); seq <= 10; seq++ {
		m, err := stream.GetMsg(context.Background(), seq)
		require.NoError(t, err)
		stored = append(stored, m.Time)
	}
	require.True(t, slices.IsSortedFunc(stored, func(a, b time.Time) int { return a.Compare(b) }))
	span := stored[9].Sub(stored[0])
	require.GreaterOrEqual(t, span, 1600*time.Millisecond, "10 replays at 5/s span at least 9 × 200ms")
	require.Less(t, span, 5*time.Second)
}

// TestDLQEndToEnd kills a job with a real worker, inspects it, fixes the handler and replays it.
func TestDLQEndToEnd(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var broken atomic.Bool
	broken.Store(true)
	var calls atomic.Int32
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL: b.natsURL, DatabaseURL: b.dbURL, Namespace: b.ns, SkipMigrate: true, ID: "e2e-worker",
		Logger: slog.New(slog.DiscardHandler),
	})
	require.NoError(t, err)
	require.NoError(t, w.Handle("fixme", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		calls.Add(1)
		if broken.Load() {
			return nil, levee.Permanent(errors.New("400 Bad Request: bad template"))
		}
		return map[string]bool{"sent": true}, nil
	}), levee.Policy{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})

	id := b.publish(t, "fixme", `{"template":"welcome"}`)
	st, r := b.status(t, id, "--wait", "20s")
	require.Equal(t, 4, r.code, r.stderr)
	require.Equal(t, "dead", st["state"])
	require.Eventually(t, func() bool { return slices.Contains(b.listIDs(t), id) }, 10*time.Second, 50*time.Millisecond)

	r = b.run(t, "", "dlq", "list", "--kind", "fixme")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, id+`\s+fixme\s+permanent_error\s+1\s+\d+m?s\s+400 Bad Request: bad template`, r.stdout)
	r = b.run(t, "", "dlq", "show", id)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "worker:          e2e-worker\n")
	require.Contains(t, r.stdout, "\"template\": \"welcome\"")

	broken.Store(false)
	r = b.run(t, "", "dlq", "replay", id, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.JSONEq(t, `{"id":"`+id+`","kind":"fixme","key":"`+id+`","key_state":"dead","replayed":true}`, r.stdout)
	st, r = b.status(t, id, "--wait", "20s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "succeeded", st["state"])
	require.EqualValues(t, 1, st["attempts"], "a replay starts a fresh attempt budget")
	require.EqualValues(t, 2, calls.Load())
	require.Empty(t, b.listIDs(t))

	// Replaying again: nothing left to replay.
	r = b.run(t, "", "dlq", "replay", id)
	require.Equal(t, 3, r.code)
}
