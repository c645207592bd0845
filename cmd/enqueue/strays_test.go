package main

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
)

// Design rule 35: stats counts the messages whose subject is no job's, in the table and as
// stray_messages in --json.
func TestStatsCountsStrays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	js, err := jetstream.New(leveetest.Conn(t, b.natsURL))
	require.NoError(t, err)
	for _, subject := range []string{b.ns + ".jobs.charge", b.ns + ".jobs.charge.1.extra", b.ns + ".jobs.Charge.2"} {
		_, err := js.Publish(context.Background(), subject, []byte(`{}`))
		require.NoError(t, err)
	}
	m := b.stats(t)
	require.Equal(t, 3.0, m["stray_messages"])
	r := b.run(t, "", "stats")
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, "\nstray messages: 3 (")
}
