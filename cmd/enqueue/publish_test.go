package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
)

func TestPublishThenStatus(t *testing.T) {
	t.Parallel()
	b := setup(t)

	r := b.run(t, "", "publish", "noop", `{"n": 1}`)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, 1, strings.Count(r.stdout, "\n"), "one line: %q", r.stdout)
	id := strings.TrimSpace(r.stdout)
	_, err := ulid.ParseStrict(id)
	require.NoError(t, err, "publish prints a ULID")
	require.Contains(t, r.stderr, "warning: no worker has ever served kind noop; the job waits in the stream until one does")

	st, r := b.status(t, id)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "queued", st["state"])
	require.Equal(t, id, st["id"])
	require.Equal(t, "noop", st["kind"])
	require.Equal(t, id, st["key"], "the key defaults to the id")
	for _, k := range jsonKeys(reflect.TypeFor[levee.JobStatus]()) {
		require.Contains(t, st, k, "status --json always has key %q", k)
	}

	r = b.run(t, "", "status", id)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "state:           queued\n")
	require.Contains(t, r.stdout, "kind:            noop\n")
	require.NotContains(t, r.stdout, "reason:", "empty fields are skipped")
}

func TestPublishJSONDuplicate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := "order-" + b.ns

	var got []map[string]any
	for range 2 {
		r := b.run(t, "", "publish", "charge", `{"amount": 1200}`, "--id", id, "--json")
		require.Equal(t, 0, r.code, r.stderr)
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.stdout), &m))
		got = append(got, m)
	}
	require.Equal(t, map[string]any{"id": id, "kind": "charge", "key": id, "duplicate": false}, got[0])
	require.Equal(t, map[string]any{"id": id, "kind": "charge", "key": id, "duplicate": true}, got[1])
}

func TestPublishKeyAndStdin(t *testing.T) {
	t.Parallel()
	b := setup(t)

	id := b.publish(t, "noop", "{}", "--key", "my-key", "--max-attempts", "3")
	st, r := b.status(t, id)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "my-key", st["key"])

	r = b.run(t, "{\"from\": \"stdin\"}\n", "publish", "noop", "-", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	var res levee.PublishResult
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &res))
	st, r = b.status(t, res.ID)
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "queued", st["state"])
}

func TestPublishFile(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lines := "{\"payload\": {\"n\": 1}}\n" +
		"\n" +
		"{\"payload\": [2], \"key\": \"second\"}\n" +
		"   \n" +
		"{\"payload\": \"three\", \"id\": \"third-" + b.ns + "\", \"max_attempts\": 2}\n"

	r := b.run(t, lines, "publish", "noop", "--file", "-")
	require.Equal(t, 0, r.code, r.stderr)
	ids := strings.Fields(r.stdout)
	require.Len(t, ids, 3)
	require.Equal(t, "third-"+b.ns, ids[2])
	require.Contains(t, r.stderr, "published 3 jobs (0 duplicates, 0 failed)\n")
	require.NotContains(t, r.stderr, "publishing", "no progress bar when stderr is not a terminal")
	for i, id := range ids {
		st, r := b.status(t, id)
		require.Equal(t, 0, r.code, r.stderr)
		require.Equal(t, "queued", st["state"])
		if i == 1 {
			require.Equal(t, "second", st["key"])
		}
	}

	// Again with --json: every job is a duplicate of the first run's except the two whose
	// ids are new ULIDs.
	r = b.run(t, lines, "publish", "noop", "--file", "-", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stderr, "published 3 jobs (1 duplicates, 0 failed)\n")
	var last levee.PublishResult
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for dec.More() {
		require.NoError(t, dec.Decode(&last))
	}
	require.Equal(t, levee.PublishResult{ID: "third-" + b.ns, Kind: "noop", Key: "third-" + b.ns, Duplicate: true}, last)
}

func TestPublishFileMalformed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	first := "first-" + b.ns
	for name, tc := range map[string]struct{ lines, want string }{
		"bad JSON":      {"{\"payload\": {}, \"id\": \"" + first + "\"}\n{\"payload\": 2}\n\n{\"payload\": oops}\n", "line 4: "},
		"no payload":    {"{\"payload\": {}, \"id\": \"" + first + "\"}\n{\"id\": \"x\"}\n", `line 2: missing "payload"`},
		"unknown field": {"{\"payload\": {}, \"id\": \"" + first + "\"}\n{\"payload\": 1, \"max_atempts\": 2}\n", `line 2: not a job object`},
		"bad id":        {"{\"payload\": {}, \"id\": \"" + first + "\"}\n{\"payload\": 1, \"id\": \"a b\"}\n", "line 2: invalid job id"},
	} {
		r := b.run(t, tc.lines, "publish", "noop", "--file", "-")
		require.Equal(t, 2, r.code, name)
		require.Contains(t, r.stderr, tc.want, name)
		require.Contains(t, r.stderr, "nothing was published", name)
		require.Empty(t, r.stdout, name)
	}
	_, r := b.status(t, first)
	require.Equal(t, 3, r.code, "nothing was published: %s", r.stderr)
}

// A key that is not valid UTF-8 could not be stored in the ledger (design rule 28): publish
// refuses it as a usage error, and nothing is published.
func TestPublishRefusesKeyNotUTF8(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.run(t, "", "publish", "noop", "{}", "--key", "order-\xff42")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "invalid idempotency key: not valid UTF-8")
	require.Empty(t, r.stdout, "no job id: nothing was published")
}
