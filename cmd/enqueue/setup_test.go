package main

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 34: publish and stats refuse a work stream made by hand with memory storage,
// with one line naming it, the setting and the fix (exit 1).
func TestForeignStreamRefused(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	natsURL := leveetest.NATSURL(t)
	js, err := jetstream.New(leveetest.Conn(t, natsURL))
	require.NoError(t, err)
	names, err := queue.NewNames(ns)
	require.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: names.JobsStream(), Subjects: []string{names.JobsSubjects()},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	t.Cleanup(func() {
		for _, s := range []string{names.JobsStream(), names.DLQStream()} {
			_ = js.DeleteStream(context.Background(), s)
		}
	})
	for _, args := range [][]string{{"publish", "noop", "{}"}, {"stats"}} {
		r := runCLI(t, "", append(args, "--nats-url", natsURL, "--namespace", ns, "--database-url", "")...)
		require.Equal(t, 1, r.code, "%v: %s", args, r.stdout)
		require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)
		require.Contains(t, r.stderr, "stream "+names.JobsStream()+" has memory storage; Levee needs file storage")
		require.Contains(t, r.stderr, "--storage file")
	}
}
