package queue_test

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

// CheckSetup (design rule 34) warns about a DLQ stream made by hand with a message size limit,
// or with a size or count limit and Discard=New (what infrastructure-as-code often sets): once
// full such a DLQ refuses dead jobs, and a larger copy keeps only the start of its payload
// (found by review). A copy larger than the stream's limit is cut to fit, not refused.
func TestCheckSetupWarnsAboutDLQLimits(t *testing.T) {
	t.Parallel()
	srv := leveetest.PrivateServers(t)[0]
	ctx := context.Background()
	q, js, names := foreignQueue(t, srv.URL)
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: names.DLQStream(), Subjects: []string{names.DLQSubjects()},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage,
		Discard: jetstream.DiscardNew, MaxMsgSize: 4096, MaxMsgs: 1000, Duplicates: 2 * time.Minute,
	})
	require.NoError(t, err)
	require.NoError(t, q.EnsureStreams(ctx))
	problems, err := q.CheckSetup(ctx, nil)
	require.NoError(t, err)
	var settings []string
	for _, p := range problems {
		require.False(t, p.Fatal, p.Message)
		settings = append(settings, p.Setting)
	}
	require.Contains(t, settings, "limits")
	require.Contains(t, settings, "max message size")

	env, err := queue.NewEnvelope("charge", "job-1", "", []byte(`"`+strings.Repeat("x", 8000)+`"`), 0, 0)
	require.NoError(t, err)
	require.NoError(t, q.DeadLetter(ctx, env, env.Payload, nil, queue.DeadInfo{Reason: "permanent_error", SourceSeq: 1}),
		"an 8 KB job's copy is cut to the DLQ's 4 KiB")
	e, err := q.GetDeadLetter(ctx, "job-1")
	require.NoError(t, err)
	require.Equal(t, "8002", e.Header.Get(queue.HeaderPayloadTruncated))
	require.Less(t, len(e.Payload), 4096)
}
