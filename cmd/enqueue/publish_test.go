package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
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
	require.Equal(t, map[string]any{"id": id, "kind": "charge", "key": id, "duplicate": false, "run_at": nil}, got[0])
	require.Equal(t, map[string]any{"id": id, "kind": "charge", "key": id, "duplicate": true, "payload_differs": false, "run_at": nil}, got[1])

	// The same id with another payload: stored once, the first payload kept, and said so.
	r := b.run(t, "", "publish", "charge", `{"amount": 9999}`, "--id", id, "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"payload_differs":true`)
	require.Contains(t, r.stderr, "was already published with another payload")
}

// --check-key asks the ledger: a key used with another payload is refused (nothing is
// published, exit 4); with the same payload the job is reported a key duplicate.
func TestPublishCheckKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	key := "invoice-" + b.ns
	r := b.run(t, "", "publish", "bill", `{"cents": 100}`, "--key", key, "--check-key", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"key_duplicate":false`)
	// The ledger learns the key when a worker claims it; record it as a worker would.
	b.claimKey(t, "bill", key, `{"cents":100}`)

	r = b.run(t, "", "publish", "bill", `{"cents": 100}`, "--key", key, "--check-key", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"key_duplicate":true`)
	require.Contains(t, r.stderr, "will take the first one's outcome")

	r = b.run(t, "", "publish", "bill", `{"cents": 999}`, "--key", key, "--check-key")
	require.Equal(t, 4, r.code, r.stderr)
	require.Contains(t, r.stderr, "was used with another payload")
	require.Empty(t, r.stdout, "nothing was published")
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
	require.Contains(t, r.stderr, "published 3 jobs (1 duplicate, 0 failed)\n")
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

// A payload of the documented 1 MiB does not fit a default NATS server once the job's headers
// are added: the error says what fits and exits 2, where the server's own refusal said
// "nats: maximum payload exceeded" and exited 1.
func TestPublishPayloadOverServerLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	payload := `"` + strings.Repeat("x", queue.DefaultMaxPayload-2) + `"`
	r := b.run(t, payload, "publish", "big", "-")
	require.Equal(t, 2, r.code, r.stderr)
	require.Contains(t, r.stderr, "max_payload")
	require.Contains(t, r.stderr, "send at most")
	require.NotContains(t, r.stderr, "maximum payload exceeded")
	require.Regexp(t, `(?m)^enqueue: payload too large: job \S+'s payload is 1048576 bytes, .*max_payload.*send at most \d+ bytes of payload.*$`, r.stderr, "one line")
	r = b.run(t, `"`+strings.Repeat("x", 1000)+`"`, "publish", "big", "-")
	require.Equal(t, 0, r.code, r.stderr)
}

// claimKey records kind's key in the ledger with payload's hash, as a worker's claim does.
func (b *bundle) claimKey(t *testing.T, kind, key, payload string) {
	t.Helper()
	env, err := queue.NewEnvelope(kind, "claimer-"+b.ns, key, []byte(payload), 0, 0)
	require.NoError(t, err)
	l := leveetest.LedgerOn(t, leveetest.Pool(t), b.ns)
	res, err := l.Claim(t.Context(), []idempotency.ClaimRequest{{JobID: env.ID, Kind: kind, Key: key,
		PayloadHash: env.PayloadHash(), EnqueuedAt: time.Now(), Lease: time.Minute}})
	require.NoError(t, err)
	require.Equal(t, idempotency.Claimed, res[0].Status)
}
