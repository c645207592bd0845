package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/leveetype"
)

// enqueue periodic list, pause, resume and delete, as a worker registered the entries.
func TestPeriodicCommands(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := b.run(t, "", "periodic", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "(no periodic jobs")

	l := leveetest.Ledger(t, b.ns)
	require.NoError(t, l.RegisterPeriodic(context.Background(), []leveetype.PeriodicJob{
		{Name: "nightly", Kind: "settle", Cron: "0 2 * * *", Timezone: "Europe/Berlin", Payload: []byte(`{"a":1}`)},
		{Name: "often", Kind: "ping", Every: 10 * time.Minute, CatchUp: leveetype.CatchUpAll},
	}, 0))

	r = b.run(t, "", "periodic", "list")
	require.Equal(t, 0, r.code, r.stderr)
	require.Regexp(t, `(?m)^nightly +settle +cron "0 2 \* \* \*" Europe/Berlin +latest +never +\S+ \(in \S+\) +no$`, r.stdout)
	require.Regexp(t, `(?m)^often +ping +every 10m +all +never +\S+ \(in \S+\) +no$`, r.stdout)

	r = b.run(t, "", "periodic", "pause", "nightly", "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "paused nightly\n", r.stdout)
	r = b.run(t, "", "periodic", "list", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	require.Len(t, lines, 2)
	var e map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &e))
	require.Equal(t, "nightly", e["name"])
	require.Equal(t, true, e["paused"])
	require.Equal(t, map[string]any{"a": 1.0}, e["payload"])
	require.Nil(t, e["last_run"])

	r = b.run(t, "", "periodic", "resume", "nightly", "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "resumed nightly\n", r.stdout)
	require.Contains(t, r.stderr, "next run ")

	r = b.run(t, "", "periodic", "delete", "often", "--as", "ada")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "deleted often\n", r.stdout)
	r = b.run(t, "", "periodic", "list", "--json")
	require.NotContains(t, r.stdout, `"often"`)

	// An unknown name is exit 3; a name that cannot be one is a usage error.
	r = b.run(t, "", "periodic", "pause", "nope", "--as", "ada")
	require.Equal(t, 3, r.code)
	require.Contains(t, r.stderr, `no periodic job "nope"`)
	r = b.run(t, "", "periodic", "delete", "Not A Name", "--as", "ada")
	require.Equal(t, 2, r.code)

	r = b.run(t, "", "audit", "--json")
	require.Equal(t, 0, r.code, r.stderr)
	for _, action := range []string{"periodic_pause", "periodic_resume", "periodic_delete"} {
		require.Contains(t, r.stdout, `"action":"`+action+`"`)
	}
}
