package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
)

// TestPublishDelayUsageErrors checks the mistakes of --delay, --at and the "delay" and "at" of
// --file lines: exit 2, one line naming the flag or field, before connecting anywhere.
func TestPublishDelayUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"zero delay", "", []string{"publish", "noop", "{}", "--delay", "0s"}, "invalid --delay 0s: give a positive duration"},
		{"negative delay", "", []string{"publish", "noop", "{}", "--delay", "-5m"}, "invalid --delay -5m0s"},
		{"delay not a duration", "", []string{"publish", "noop", "{}", "--delay", "soon"}, `invalid argument "soon" for "--delay"`},
		{"bad at", "", []string{"publish", "noop", "{}", "--at", "tomorrow 9am"}, `invalid --at "tomorrow 9am": give an RFC 3339 time`},
		{"at without zone", "", []string{"publish", "noop", "{}", "--at", "2026-12-24T09:00:00"}, "RFC 3339"},
		{"both", "", []string{"publish", "noop", "{}", "--delay", "1m", "--at", "2026-12-24T09:00:00Z"}, "give --delay or --at, not both"},
		{"check-key delayed", "", []string{"publish", "noop", "{}", "--delay", "1m", "--check-key"}, "--check-key applies to a job published now"},
		{"file bad delay", `{"payload": 1, "delay": "ten minutes"}` + "\n", []string{"publish", "noop", "--file", "-"}, `line 1: invalid "delay" "ten minutes": give a Go duration`},
		{"file negative delay", `{"payload": 1}` + "\n" + `{"payload": 1, "delay": "-1m"}` + "\n", []string{"publish", "noop", "--file", "-"}, `line 2: invalid "delay" -1m0s: give a positive duration`},
		{"file bad at", `{"payload": 1, "at": "24/12/2026"}` + "\n", []string{"publish", "noop", "--file", "-"}, `line 1: invalid "at" "24/12/2026": give an RFC 3339 time`},
		{"file both", `{"payload": 1, "delay": "1m", "at": "2026-12-24T09:00:00Z"}` + "\n", []string{"publish", "noop", "--file", "-"}, `line 1: give "delay" or "at", not both`},
		{"file delay not a string", `{"payload": 1, "delay": 600}` + "\n", []string{"publish", "noop", "--file", "-"}, `line 1: not a job object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runCLI(t, tc.stdin, append(tc.args, "--nats-url", unreachableNATS)...)
			require.Equal(t, 2, r.code, r.stderr)
			require.True(t, strings.HasPrefix(r.stderr, "enqueue: "), r.stderr)
			require.Contains(t, r.stderr, tc.want)
			require.Empty(t, r.stdout)
		})
	}
}

// A delayed job waits in the Postgres ledger: without a database URL it is refused with one
// line saying so (exit 1), and nothing is published; an --at in the past needs no ledger.
func TestPublishDelayedNeedsDatabase(t *testing.T) {
	t.Parallel()
	b := setup(t)
	noDB := []string{"--nats-url", b.natsURL, "--namespace", b.ns, "--database-url", ""}
	for _, args := range [][]string{
		{"publish", "noop", "{}", "--delay", "10m"},
		{"publish", "noop", "{}", "--at", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)},
	} {
		r := runCLI(t, "", append(args, noDB...)...)
		require.Equal(t, 1, r.code, r.stderr)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		require.Contains(t, r.stderr, "delayed jobs wait in the Postgres ledger until they are due: pass --database-url (or set LEVEE_DATABASE_URL)")
		require.Empty(t, r.stdout)
	}
	r := runCLI(t, `{"payload": 1}`+"\n"+`{"payload": 2, "delay": "1m"}`+"\n", append([]string{"publish", "noop", "--file", "-"}, noDB...)...)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "line 2: delayed jobs wait in the Postgres ledger")
	require.Contains(t, r.stderr, "nothing was published")
	require.Empty(t, r.stdout)

	// Postgres unreachable: the connection error says why Postgres is needed.
	r = runCLI(t, "", "publish", "noop", "{}", "--delay", "1m", "--nats-url", b.natsURL, "--namespace", b.ns,
		"--database-url", "postgres://levee:hunter2@127.0.0.1:1/levee?sslmode=disable")
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "delayed jobs wait in the Postgres ledger: ")
	require.Contains(t, r.stderr, "LEVEE_DATABASE_URL")
	require.NotContains(t, r.stderr, "hunter2")

	// A time in the past runs now, through the stream: no ledger needed.
	r = runCLI(t, "", append([]string{"publish", "noop", "{}", "--at", "2020-01-01T00:00:00Z", "--json"}, noDB...)...)
	require.Equal(t, 0, r.code, r.stderr)
	var res map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	require.Nil(t, res["run_at"])
	require.Contains(t, r.stderr, "2020-01-01T00:00:00Z is in the past: job "+res["id"].(string)+" was published to run now")
	st, _ := b.status(t, res["id"].(string))
	require.Equal(t, "queued", st["state"])
}

// Delayed jobs are published into the ledger and shown as scheduled by status, jobs, find and
// stats, soonest due first.
func TestPublishDelayedIsListed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := time.Now().Add(3 * time.Hour).UTC().Truncate(time.Second)

	// --at: stdout is the id, stderr says when it runs.
	r := b.run(t, "", "publish", "remind", `{"n": 1}`, "--at", at.Format(time.RFC3339), "--key", "remind-1")
	require.Equal(t, 0, r.code, r.stderr)
	late := strings.TrimSpace(r.stdout)
	require.Regexp(t, `published `+late+` \(kind remind\), runs at `+at.Format(time.RFC3339)+` \(in 2h59m\)\n`, r.stderr)

	// --delay --json: "run_at" is when it runs.
	r = b.run(t, "", "publish", "remind", `{"n": 2}`, "--delay", "10m", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res levee.PublishResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	require.NotNil(t, res.RunAt)
	require.WithinDuration(t, time.Now().Add(10*time.Minute), *res.RunAt, time.Minute)
	require.Contains(t, r.stdout, `"run_at":"`)
	soon := res.ID

	// The same id again is a duplicate: the first stands.
	r = b.run(t, "", "publish", "remind", `{"n": 3}`, "--delay", "1h", "--id", soon, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"duplicate":true`)
	require.Contains(t, r.stdout, `"run_at":null`)
	require.Contains(t, r.stderr, "is scheduled already")

	// status: scheduled, with run_at.
	st, r := b.status(t, late)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "scheduled", st["state"])
	require.Equal(t, at.Format(time.RFC3339), st["run_at"])
	require.Equal(t, "remind-1", st["key"])
	r = b.run(t, "", "status", late)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "state:           scheduled\n")
	require.Regexp(t, `run_at:          \S+ \S+ \S+ \(in 2h59m\d+(\.\d)?s\)\n`, r.stdout)

	// jobs --state scheduled: soonest first, with key and run_at.
	r = b.run(t, "", "jobs", "--state", "scheduled")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 3, r.stdout)
	require.Regexp(t, `^ID +KIND +KEY +RUN AT +AGE +LAST ERROR$`, lines[0])
	require.Regexp(t, `^`+soon+` +remind +`+soon+` +\S+ \(in 9m\d\ds\) +\d+(ms|s) *$`, lines[1])
	require.Regexp(t, `^`+late+` +remind +remind-1 +`+at.Format(time.RFC3339)+` \(in 2h59m\)`, lines[2])

	// --json and paging by cursor, in run_at order.
	r = b.run(t, "", "jobs", "--state", "scheduled", "--json", "--limit", "1")
	require.Equal(t, 0, r.code, r.stderr)
	var first map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &first))
	require.Equal(t, soon, first["id"])
	require.Equal(t, "scheduled", first["state"])
	require.NotNil(t, first["run_at"])
	_, cursor, ok := strings.Cut(strings.TrimSpace(r.stderr), "--cursor ")
	require.True(t, ok, r.stderr)
	cursor, _, _ = strings.Cut(cursor, " ")
	r = b.run(t, "", "jobs", "--state", "scheduled", "--json", "--limit", "1", "--cursor", cursor)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"id":"`+late+`"`)
	require.Empty(t, r.stderr, "no more pages")

	// --kind filters; an unfiltered listing has them too, saying when they run.
	r = b.run(t, "", "jobs", "--state", "scheduled", "--kind", "other")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), "header only: %q", r.stdout)
	r = b.run(t, "", "jobs")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, late+` +remind +scheduled +0 +\S+ +runs at `+at.Format(time.RFC3339), r.stdout)

	// find by key; stats counts them.
	r = b.run(t, "", "find", "remind-1", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"id":"`+late+`"`)
	m := b.stats(t)
	require.Equal(t, 2.0, kindLine(t, m, "remind")["scheduled"])
	r = b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, ` +- +2 +orphan \(no worker\)\n$`, tableLine(t, r.stdout, "remind"))
}

// A --file with delayed lines stores those in the ledger one by one and publishes the others in
// one batch; the output keeps the file's order.
func TestPublishFileDelayed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	at := time.Now().Add(time.Hour).UTC().Truncate(time.Second).Format(time.RFC3339)
	lines := `{"payload": 1}` + "\n" +
		`{"payload": 2, "delay": "10m"}` + "\n" +
		`{"payload": 3, "at": "` + at + `"}` + "\n" +
		`{"payload": 4, "at": "2020-01-01T00:00:00Z"}` + "\n"
	r := b.run(t, lines, "publish", "noop", "--file", "-", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "published 4 jobs (0 duplicates, 0 failed; 2 scheduled to run later)\n")
	var got []levee.PublishResult
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for dec.More() {
		var res levee.PublishResult
		require.NoError(t, dec.Decode(&res))
		got = append(got, res)
	}
	require.Len(t, got, 4)
	require.Nil(t, got[0].RunAt)
	require.NotNil(t, got[1].RunAt)
	require.Equal(t, at, got[2].RunAt.Format(time.RFC3339))
	require.Nil(t, got[3].RunAt, "a time in the past runs now")
	for i, want := range []string{"queued", "scheduled", "scheduled", "queued"} {
		st, r := b.status(t, got[i].ID)
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, want, st["state"], "line %d", i+1)
	}

	// --delay applies to the lines without "delay" or "at".
	r = b.run(t, `{"payload": 5}`+"\n"+`{"payload": 6, "at": "2020-01-01T00:00:00Z"}`+"\n", "publish", "noop", "--file", "-", "--delay", "1h")
	require.Equal(t, 0, r.code, r.stderr)
	ids := strings.Fields(r.stdout)
	require.Len(t, ids, 2)
	st, _ := b.status(t, ids[0])
	require.Equal(t, "scheduled", st["state"])
	st, _ = b.status(t, ids[1])
	require.Equal(t, "queued", st["state"])
}

// callCounter counts handler calls by job id.
type callCounter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *callCounter) of(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// startCountingWorker runs a worker in the bundle's namespace whose handler of kind counts its
// calls and succeeds, until the test ends. Its dispatcher publishes the namespace's due jobs.
func startCountingWorker(t *testing.T, b *bundle, kind string) *callCounter {
	t.Helper()
	cc := &callCounter{calls: map[string]int{}}
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL: b.natsURL, DatabaseURL: b.dbURL, Namespace: b.ns, SkipMigrate: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, w.Handle(kind, levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		cc.mu.Lock()
		defer cc.mu.Unlock()
		cc.calls[job.ID]++
		return nil, nil
	}), levee.Policy{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
	return cc
}

// A cancelled scheduled job never runs: its row leaves the schedule, it is recorded dead with
// reason cancelled (and copied to the DLQ, as a cancelled queued job is), and the cancel is
// audited. 'retry' brings it back.
func TestCancelScheduledNeverRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	victim := b.publish(t, "later", `{"n": 1}`, "--delay", "2s")
	// Due after the victim: once it has run, the dispatchers have passed the victim's time.
	witness := b.publish(t, "later", `{"n": 2}`, "--delay", "2500ms")

	r := b.run(t, "", "cancel", victim, "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "cancelled "+victim+"\n", r.stdout)
	require.Regexp(t, `^job `+victim+` was scheduled for \S+ \((in \S+|due)\): it will not run; 'enqueue retry `+victim+`' runs it after all\n$`, r.stderr)

	st, _ := b.status(t, victim)
	require.Equal(t, "dead", st["state"])
	require.Equal(t, "cancelled", st["reason"])
	require.Equal(t, "cancelled by ada", st["last_error"])
	require.Nil(t, st["run_at"])

	calls := startCountingWorker(t, b, "later")
	st, r = b.status(t, witness, "--wait", "20s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "succeeded", st["state"])
	require.Zero(t, calls.of(victim), "a cancelled scheduled job never runs")
	st, _ = b.status(t, victim)
	require.Equal(t, "dead", st["state"])

	r = b.run(t, "", "cancel", victim, "--as", "ada")
	require.Equal(t, exitConflict, r.code, r.stderr)
	require.Contains(t, r.stderr, "already dead")

	r = b.run(t, "", "jobs", "--state", "dead", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"id":"`+victim+`"`)
	r = b.run(t, "", "dlq", "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, victim)

	r = b.run(t, "", "audit", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var e map[string]any
	require.NoError(t, json.NewDecoder(strings.NewReader(r.stdout)).Decode(&e))
	require.Equal(t, "cancel", e["action"])
	require.Equal(t, victim, e["target"])
	require.Equal(t, "ada", e["actor"])
	require.Contains(t, e["detail"], "was scheduled for ")

	// Retry replays it from the dead-letter queue: it runs once.
	r = b.run(t, "", "retry", victim, "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	st, r = b.status(t, victim, "--wait", "20s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "succeeded", st["state"])
	require.Equal(t, 1, calls.of(victim))
}

// Retry makes a scheduled job due now: it runs long before its time.
func TestRetryScheduledRunsNow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	calls := startCountingWorker(t, b, "later")
	id := b.publish(t, "later", `{}`, "--delay", "1h")
	st, _ := b.status(t, id)
	require.Equal(t, "scheduled", st["state"])

	r := b.run(t, "", "retry", id, "--as", "grace")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "retrying "+id+"\n", r.stdout)
	require.Regexp(t, `^job `+id+` was scheduled for \S+ \(in 59m\d\ds\): it is due now: a running worker publishes it within a second\n$`, r.stderr)
	st, r = b.status(t, id, "--wait", "10s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "succeeded", st["state"])
	require.Equal(t, 1, calls.of(id))

	r = b.run(t, "", "audit", "--json", "--limit", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"action":"retry"`)
	require.Contains(t, r.stdout, "scheduled job made due now")

	r = b.run(t, "", "retry", id, "--as", "grace")
	require.Equal(t, exitConflict, r.code, "succeeded: %s", r.stderr)
}

func TestStatusTextScheduled(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	runAt := now.Add(90 * time.Minute)
	var buf bytes.Buffer
	require.NoError(t, printStatus(&buf, &levee.JobStatus{State: levee.StateScheduled, ID: "j1", Kind: "k", Key: "j1",
		EnqueuedAt: &now, RunAt: &runAt}, false, now))
	require.Contains(t, buf.String(), "state:           scheduled\n")
	require.Contains(t, buf.String(), "(in 1h30m0s)\n")
	require.Regexp(t, `(?m)^run_at: +2030-01-02 \d\d:34:05.000 `, buf.String())
	buf.Reset()
	require.NoError(t, printStatus(&buf, &levee.JobStatus{State: levee.StateScheduled, ID: "j1", RunAt: &now}, false, runAt))
	require.Contains(t, buf.String(), "(due: a running worker publishes it within a second)\n")
}
