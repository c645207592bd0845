package queue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// A max message size an operator sets on the DLQ while workers run is seen: a copy refused for
// its size makes the limit be read again, and the copy is cut to it (found by review: the
// limit was read once per process, "no limit" included).
func TestDLQLimitSetWhileRunningIsSeen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, js, names := foreignQueue(t, leveetest.PrivateServers(t)[0].URL)
	require.NoError(t, q.EnsureStreams(ctx))

	small, err := queue.NewEnvelope("charge", "job-1", "", []byte(`{}`), 0, 0)
	require.NoError(t, err)
	require.NoError(t, q.DeadLetter(ctx, small, small.Payload, nil, queue.DeadInfo{Reason: "permanent_error", SourceSeq: 1}))

	// The operator caps the DLQ's message size (nats stream edit --max-msg-size 4096).
	s, err := js.Stream(ctx, names.DLQStream())
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 4096
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	big, err := queue.NewEnvelope("charge", "job-2", "", []byte(`"`+strings.Repeat("x", 8000)+`"`), 0, 0)
	require.NoError(t, err)
	err = q.DeadLetter(ctx, big, big.Payload, nil, queue.DeadInfo{Reason: "permanent_error", SourceSeq: 2})
	require.NoError(t, err, "the copy must be cut to the DLQ's new 4 KiB limit, as it is for a Queue that never copied before")
}

// JetStream refuses a header block over 65,535 bytes (err_code 10097), on NATS 2.9.10 as on
// current servers: the copy of a job whose own headers come near it sheds them (found by
// review: such a job, accepted by the work stream, was never dead-lettered).
func TestDLQCopyOfAJobWithLargeHeadersFits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := leveetest.PrivateServers(t)[0]
	q, js, names := foreignQueue(t, srv.URL)
	require.NoError(t, q.EnsureStreams(ctx))

	m := nats.NewMsg(names.JobSubject("charge", "raw-1"))
	m.Data = []byte("not json")
	m.Header.Set("X-Trace", strings.Repeat("n", 65500))
	_, err := js.PublishMsg(ctx, m)
	require.NoError(t, err, "the work stream takes the job")

	env := queue.Envelope{ID: "raw-1", Kind: "charge", Key: "raw-1", Payload: m.Data}
	err = q.DeadLetter(ctx, env, env.Payload, m.Header, queue.DeadInfo{Reason: "malformed", SourceSeq: 1,
		LastError: "decode: invalid character 'o' in literal null", Worker: "host-1234"})
	require.NoError(t, err, "a job the work stream took must be dead-lettered")
}

// A DLQ whose max message size is tiny (CheckSetup refuses to start on one below 1 KiB, but one
// may be set while workers run) still takes copies: the optional Levee-* headers go last.
func TestDLQCopyFitsATinyLimit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, js, names := foreignQueue(t, leveetest.PrivateServers(t)[0].URL)
	require.NoError(t, q.EnsureStreams(ctx))
	s, err := js.Stream(ctx, names.DLQStream())
	require.NoError(t, err)
	cfg := s.CachedInfo().Config
	cfg.MaxMsgSize = 512
	_, err = js.UpdateStream(ctx, cfg)
	require.NoError(t, err)

	env, err := queue.NewEnvelope("charge", "job-1", "", []byte(`{}`), 0, 0)
	require.NoError(t, err)
	err = q.DeadLetter(ctx, env, env.Payload, nil, queue.DeadInfo{Reason: "max_attempts", Attempts: 5, SourceSeq: 1,
		LastError: strings.Repeat("upstream said no; ", 20), Worker: "ip-10-0-0-1.eu-west-1.compute.internal-12345"})
	require.NoError(t, err, "a 2-byte job is dead-lettered under a 512-byte DLQ limit")
	problems, err := q.CheckSetup(ctx, nil)
	require.NoError(t, err)
	require.Error(t, queue.FatalSetup(problems), "a DLQ limit below 1 KiB refuses a start")
}
