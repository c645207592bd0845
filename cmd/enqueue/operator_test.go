package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := b.publish(t, "later", `{"n":1}`, "--key", "order-9")

	r := b.run(t, "", "cancel", id, "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "cancelled "+id+"\n", r.stdout)
	r = b.run(t, "", "cancel", id, "--as", "ada")
	require.Equal(t, exitConflict, r.code)
	require.Contains(t, r.stderr, "already dead")

	st, _ := b.status(t, id)
	require.Equal(t, "dead", st["state"])
	require.Equal(t, "cancelled", st["reason"])

	r = b.run(t, "", "jobs", "--state", "dead", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var listed map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed))
	require.Equal(t, id, listed["id"])
	r = b.run(t, "", "jobs", "--kind", "later")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, id)
	require.Contains(t, r.stdout, "cancelled")

	r = b.run(t, "", "find", "order-9", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var found map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &found))
	require.Equal(t, id, found["id"])
	require.Equal(t, []any{}, found["timeline"])
	r = b.run(t, "", "find", "no-such-job")
	require.Equal(t, exitNoJob, r.code)

	r = b.run(t, "", "retry", id, "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	st, _ = b.status(t, id)
	require.Equal(t, "retrying", st["state"], "replayed: its key is revived until a worker takes it")

	// A kind nothing knows of is a typo: refused, with the nearest known kind.
	for _, args := range [][]string{{"pause", "ghostkind"}, {"resume", "ghostkind"}, {"breaker", "reset", "ghostkind"}} {
		r = b.run(t, "", append(args, "--as", "grace")...)
		require.Equal(t, 2, r.code, r.stderr)
		require.Contains(t, r.stderr, `unknown kind "ghostkind"`)
	}
	for _, args := range [][]string{{"pause", "later"}, {"resume", "later"}, {"breaker", "reset", "later"}} {
		r = b.run(t, "", append(args, "--as", "grace")...)
		require.Equal(t, 0, r.code, r.stderr)
	}
	require.Contains(t, b.run(t, "", "resume", "later", "--as", "grace").stderr, "no live worker serves later now")
	r = b.run(t, "", "pause", "latr", "--as", "grace")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `did you mean "later"?`)
}

func TestOperatorUsageErrors(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"jobs", "--state", "queued"}, "queued jobs wait in NATS"},
		{[]string{"jobs", "--state", "lost"}, "unknown state"},
		{[]string{"jobs", "--limit", "0"}, "--limit"},
		{[]string{"jobs", "--since", "soon"}, "--since"},
		{[]string{"jobs", "--cursor", "nonsense"}, "cursor"},
		{[]string{"pause", "Bad Kind"}, "invalid kind"},
		{[]string{"cancel", "a.b"}, "invalid job id"},
		{[]string{"retry", "x", "--as", ""}, "--as"},
		{[]string{"breaker", "reset"}, "accepts 1 arg"},
	} {
		r := b.run(t, "", tc.args...)
		require.Equal(t, 2, r.code, "%v: %s", tc.args, r.stderr)
		require.Contains(t, r.stderr, tc.want, tc.args)
		require.True(t, strings.HasPrefix(r.stderr, "enqueue: "), r.stderr)
		require.Empty(t, r.stdout)
	}
	for _, cmd := range [][]string{{"jobs"}, {"find"}, {"retry"}, {"cancel"}, {"pause"}, {"resume"}, {"breaker", "reset"}} {
		r := runCLI(t, "", append(cmd, "--help")...)
		require.Equal(t, 0, r.code)
		require.Contains(t, r.stdout, "Exit codes")
	}
}

// The CLI's DLQ actions are audited like the dashboard's, and 'enqueue audit' shows the log.
func TestDLQActionsAreAudited(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []string
	for range 2 {
		r := b.run(t, "", "publish", "orphan", "{}")
		require.Equal(t, 0, r.code, r.stderr)
		ids = append(ids, strings.TrimSpace(r.stdout))
	}
	r := b.run(t, "", "dlq", "capture-orphans", "--kind", "orphan")
	require.Equal(t, 0, r.code, r.stderr)
	r = b.run(t, "", "dlq", "replay", ids[0], "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	r = b.run(t, "", "dlq", "purge", ids[1], "--yes", "--as", "grace")
	require.Equal(t, 0, r.code, r.stderr)

	r = b.run(t, "", "audit", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var got []string
	for line := range strings.Lines(r.stdout) {
		var e map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &e))
		got = append(got, fmt.Sprint(e["actor"], " ", e["action"], " ", e["target"]))
	}
	require.Equal(t, []string{"grace dlq.purge " + ids[1], "ada dlq.replay " + ids[0]}, got, "newest first")

	r = b.run(t, "", "audit")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "dlq.replay")
	r = b.run(t, "", "audit", "--since", "bogus")
	require.Equal(t, 2, r.code)
}
