package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 34: --check-config also checks, when NATS answers, the namespace's existing
// streams and the consumers of the file's kinds, as a start would: a problem that would refuse
// the start is an error (exit 1), a harmless difference a warning. It creates nothing.
func TestCheckConfigChecksStreams(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	natsURL := leveetest.NATSURL(t)
	ctx := context.Background()
	js, err := jetstream.New(leveetest.Conn(t, natsURL))
	require.NoError(t, err)
	names, err := queue.NewNames(ns)
	require.NoError(t, err)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), names.JobsStream()) })
	cfg := writeConfig(t, "kinds:\n  ping: {handler: noop, ack_wait: 20s}\n")
	args := []string{"--config", cfg, "--check-config", "--nats-url", natsURL, "--namespace", ns}

	code, stdout, stderr := runInProcess(t, args...)
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "namespace "+ns+":\n  streams and consumers: OK")
	_, err = js.Stream(ctx, names.JobsStream())
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "--check-config creates nothing")

	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: names.JobsStream(), Subjects: []string{names.JobsSubjects()},
		Retention: jetstream.WorkQueuePolicy, Storage: jetstream.MemoryStorage, Duplicates: time.Minute})
	require.NoError(t, err)
	_, err = js.CreateConsumer(ctx, names.JobsStream(), jetstream.ConsumerConfig{Durable: names.Consumer("ping"),
		FilterSubject: names.KindFilter("ping"), AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second})
	require.NoError(t, err)
	code, stdout, stderr = runInProcess(t, args...)
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stdout, "  error: stream "+names.JobsStream()+" has memory storage; Levee needs file storage")
	require.Contains(t, stdout, "  warning: stream "+names.JobsStream()+" has a duplicate window of 1m0s")
	// The consumer's AckWait is the lease Postgres keeps (ack_wait 20s + 6.667s + a 2s margin),
	// plus the margin again.
	require.Contains(t, stdout, "  warning: consumer "+names.Consumer("ping")+" on "+names.JobsStream()+" had ack wait 5s; this worker sets 30.667s")
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	require.Contains(t, stderr, "would refuse the start")

	// NATS unreachable: the file alone is checked, and it passes.
	code, stdout, stderr = runInProcess(t, "--config", cfg, "--check-config", "--nats-url", "nats://127.0.0.1:1")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "not reachable, streams and consumers not checked")
}
