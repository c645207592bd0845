package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/leveetype"
)

func TestStatusUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.run(t, "", "status", "01NOSUCHJOB")
	require.Equal(t, 3, r.code)
	require.Equal(t, "enqueue: job 01NOSUCHJOB not found: not in the stream and not in the ledger (check --namespace)\n", r.stderr)
	require.Empty(t, r.stdout)
}

func TestStatusWaitTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.publish(t, "nobody", "{}")
	st, r := b.status(t, id, "--wait", "500ms")
	require.Equal(t, 5, r.code, r.stderr)
	require.Equal(t, "queued", st["state"], "prints the last state seen")
	require.Contains(t, r.stderr, "is still queued after --wait 500ms")
}

func TestStatusLedgerNotMigrated(t *testing.T) {
	t.Parallel()
	natsURL, dbURL, ns := leveetest.NATSURL(t), leveetest.DatabaseURL(t), leveetest.Namespace(t)
	leveetest.Queue(t, natsURL, ns) // streams only: no worker has migrated the schema
	args := func(a ...string) []string {
		return append(a, "--nats-url", natsURL, "--database-url", dbURL, "--namespace", ns)
	}
	r := runCLI(t, "", args("publish", "noop", "{}")...)
	require.Equal(t, 0, r.code, r.stderr)
	id := strings.TrimSpace(r.stdout)

	r = runCLI(t, "", args("status", id)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "queued")

	r = runCLI(t, "", args("status", "01NOSUCHJOB")...)
	require.Equal(t, 3, r.code)
	require.Contains(t, r.stderr, "check --namespace")
}

func TestStatusJSONKeys(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	require.NoError(t, printStatus(&buf, &levee.JobStatus{State: levee.StateQueued, ID: "x"}, true, time.Time{}))
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
	keys := jsonKeys(reflect.TypeFor[levee.JobStatus]())
	require.Len(t, m, len(keys))
	for _, k := range keys {
		require.Contains(t, m, k)
	}
	require.True(t, slices.Contains(keys, "duplicate_of"))
}

func TestStatusText(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	next := now.Add(2 * time.Second)
	var buf bytes.Buffer
	require.NoError(t, printStatus(&buf, &levee.JobStatus{
		State: levee.StateRetrying, ID: "j1", Kind: "http", Key: "k1", Attempts: 2,
		LastError: "503 Service Unavailable\nretry later", NextAttempt: &next,
	}, false, now))
	out := buf.String()
	require.Contains(t, out, "state:           retrying\n")
	require.Contains(t, out, "attempts:        2\n")
	require.Contains(t, out, "last_error:      503 Service Unavailable\n                 retry later\n")
	require.Contains(t, out, "(in 2s)\n")
	require.NotContains(t, out, "result:")
	require.NotContains(t, out, "started_at:")
}

// startWorker runs a worker in the bundle's namespace with kinds "ok" (succeeds with
// {"done":true}) and "boom" (fails permanently), until the test ends.
func startWorker(t *testing.T, b *bundle) {
	t.Helper()
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL: b.natsURL, DatabaseURL: b.dbURL, Namespace: b.ns, SkipMigrate: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(t, err)
	require.NoError(t, w.Handle("ok", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		return map[string]bool{"done": true}, nil
	}), levee.Policy{}))
	require.NoError(t, w.Handle("boom", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		return nil, levee.Permanent(errors.New("boom"))
	}), levee.Policy{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
	})
}

func TestStatusWaitFinal(t *testing.T) {
	t.Parallel()
	b := setup(t)
	startWorker(t, b)

	okID := b.publish(t, "ok", `{"n": 1}`)
	boomID := b.publish(t, "boom", `{"n": 2}`)

	st, r := b.status(t, okID, "--wait", "20s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "succeeded", st["state"])
	require.Equal(t, map[string]any{"done": true}, st["result"])
	require.EqualValues(t, 1, st["attempts"])
	require.NotNil(t, st["finished_at"])

	st, r = b.status(t, boomID, "--wait", "20s")
	require.Equal(t, 4, r.code, r.stderr)
	require.Equal(t, "dead", st["state"])
	require.Equal(t, "permanent_error", st["reason"])
	require.Contains(t, st["last_error"], "boom")
	require.Contains(t, r.stderr, "job "+boomID+" is dead: permanent_error")

	// Without --wait a dead job is found: exit 0.
	r = b.run(t, "", "status", boomID)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "reason:          permanent_error\n")

	// The kind is served now: no warning.
	r = b.run(t, "", "publish", "ok", "{}")
	require.Equal(t, 0, r.code, r.stderr)
	require.NotContains(t, r.stderr, "warning")
}

// Text from a downstream cannot drive the terminal: escape sequences in an error or a result
// are printed as text (\x1b), by status, dlq show and the tables.
func TestControlCharactersArePrintedAsText(t *testing.T) {
	t.Parallel()
	evil := "boom \x1b]0;pwned\x07 \x1b[2J\u009b31m red\ttab\nline"
	st := &levee.JobStatus{State: levee.StateDead, ID: "j1", Kind: "k", Key: "j1", Reason: "permanent_error", LastError: evil,
		Result: json.RawMessage(`"\u001b[31m"`)}
	var b strings.Builder
	require.NoError(t, printStatus(&b, st, false, time.Now()))
	out := b.String()
	for _, c := range []string{"\x1b", "\x07", "\u009b"} {
		require.NotContains(t, out, c)
	}
	require.Contains(t, out, `\x1b]0;pwned\x07`)
	require.Contains(t, out, "red\ttab", "tabs stay")
	require.NotContains(t, oneLineTruncated(evil, 200), "\x1b")
	require.NotContains(t, oneLineTruncated(evil, 200), "\u009b")
	var dj strings.Builder
	require.NoError(t, printDeadJob(&dj, &leveetype.DeadJob{ID: "j1", Kind: "k", LastError: evil, Payload: json.RawMessage(`"\u001b"`),
		Headers: map[string]string{"X-Evil": "\x1b[2J"}}, time.Now()))
	require.NotContains(t, dj.String(), "\x1b")
}
