package levee_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// A raw message whose header block comes near JetStream's 64 KiB (here a 65,500-byte X-Trace
// header, which the work stream accepts) is dead-lettered: its copy sheds that header (found by
// review: the DLQ refused every copy, and the job was never done nor dead).
func TestRawMessageWithLargeHeadersIsDeadLettered(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	nc := leveetest.Conn(t, srv.URL)
	b.startWorker(t, "big", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		t.Error("a malformed message was run")
		return nil, nil
	}), levee.Policy{AckWait: time.Second, MaxAttempts: 1, MaxDeliveries: 2})

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	names, err := queue.NewNames(b.ns)
	require.NoError(t, err)
	m := nats.NewMsg(names.JobSubject("big", "raw-1"))
	m.Data = []byte("not json")
	m.Header.Set("X-Trace", strings.Repeat("n", 65500)) // a header block of 65,523 bytes, under the 65,535 JetStream takes
	_, err = js.PublishMsg(context.Background(), m)
	require.NoError(t, err, "the work stream accepts the message")

	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if dj, err := b.ops.DeadJobGet(context.Background(), "raw-1"); err == nil {
			require.Equal(t, "malformed", dj.Reason)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("a malformed raw message that fitted max_payload was never dead-lettered (20 s)")
}

// A job whose copy was cut is replayed with its own full payload, as the docs say: the payload
// is compared with the key's stored hash, not with the cut copy (found by review: it was
// refused as a payload change); another payload still needs AllowPayloadChange.
func TestTruncatedCopyReplayedWithItsOwnPayload(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	nc := leveetest.Conn(t, srv.URL)
	n := min(int(nc.MaxPayload())-250, 1<<20-2)
	payload := json.RawMessage(`"` + strings.Repeat("x", n-2) + `"`)
	b.startWorker(t, "big", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		return nil, levee.Permanent(errors.New("refused: " + strings.Repeat("e", 900)))
	}), levee.Policy{AckWait: time.Second, MaxAttempts: 1, MaxDeliveries: 2, Timeout: 5 * time.Second})
	res, err := b.client.Publish(context.Background(), "big", payload)
	require.NoError(t, err)

	var dj *leveetype.DeadJob
	deadline := time.Now().Add(30 * time.Second)
	for dj == nil && time.Now().Before(deadline) {
		if d, err := b.ops.DeadJobGet(context.Background(), res.ID); err == nil {
			dj = d
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.NotNil(t, dj, "dead-lettered")
	require.NotEmpty(t, dj.Headers[queue.HeaderPayloadTruncated], "the copy was cut")

	other := json.RawMessage(`"` + strings.Repeat("y", 10) + `"`)
	_, err = b.ops.DeadJobReplay(context.Background(), *dj, admin.DeadJobReplayParams{Payload: other})
	require.ErrorIs(t, err, admin.ErrPayloadChange, "another payload is still a change")
	_, err = b.ops.DeadJobReplay(context.Background(), *dj, admin.DeadJobReplayParams{Payload: payload})
	require.NoError(t, err, "replaying a cut copy with the job's own full payload, as the docs say")
}
