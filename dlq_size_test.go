package levee_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// A job whose message fits the server's max_payload but whose dead-letter copy would not (the
// copy adds Levee-* headers, among them a last error of up to 1 KiB) is still dead-lettered:
// the copy is shrunk to fit (found by review: every delivery failed to copy it, and the job was
// neither done nor dead, forever; design rule 32).
func TestDeadLetterCopyNearMaxPayloadFits(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0] // the system NATS (2.9.10)
	b := setup(t, srv)
	nc := leveetest.Conn(t, srv.URL)
	maxPayload := int(nc.MaxPayload())

	// A payload that leaves 250 bytes of room for the job's own headers (about 100): the job
	// is accepted, under Levee's own 1 MiB payload bound.
	n := min(maxPayload-250, 1<<20-2)
	payload := `"` + strings.Repeat("x", n-2) + `"`
	var calls atomic.Int32
	b.startWorker(t, "big", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		calls.Add(1)
		return nil, levee.Permanent(errors.New("refused: " + strings.Repeat("e", 900)))
	}), levee.Policy{AckWait: time.Second, MaxAttempts: 1, MaxDeliveries: 2, Timeout: 5 * time.Second})

	res, err := b.client.Publish(context.Background(), "big", json.RawMessage(payload))
	require.NoError(t, err, "the job itself fits (max_payload %d, payload %d)", maxPayload, len(payload))

	// The handler runs once and the key is dead in the ledger...
	st := b.waitFinal(t, res.ID, 20*time.Second)
	require.Equal(t, levee.StateDead, st.State)
	require.EqualValues(t, 1, calls.Load())

	// ...but its DLQ copy never lands: neither from the worker (a 900-byte error), nor from the
	// max-deliveries advisory once its deliveries ran out (a 90-byte error).
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if dj, err := b.ops.DeadJobGet(context.Background(), res.ID); err == nil {
			require.Equal(t, "permanent_error", dj.Reason, "dead-lettered by the worker, not via its deliveries running out")
			_, err := b.ops.DeadJobReplay(context.Background(), *dj, admin.DeadJobReplayParams{})
			if dj.Headers[queue.HeaderPayloadTruncated] != "" {
				require.ErrorIs(t, err, admin.ErrPayloadTruncated, "a cut payload is never replayed as it is")
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	q := leveetest.Queue(t, srv.URL, b.ns)
	stats, err := q.WorkStats(context.Background(), 0)
	require.NoError(t, err)
	t.Fatalf("job %s is dead in the ledger but has no DLQ copy after 30s; work stream still holds %d message(s) (kinds %+v)",
		res.ID, stats.Messages, stats.Kinds["big"])
}

// The same with a hostile raw message: a body that is not JSON, a little under the server's
// max_payload, published with plain NATS. It is malformed, so it is dead-lettered at once
// (design rule 28), its copy shrunk to fit.
func TestMalformedMessageNearMaxPayloadIsDeadLettered(t *testing.T) {
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
	body := []byte("not json " + strings.Repeat("x", int(nc.MaxPayload())-300))
	_, err = js.Publish(context.Background(), names.JobSubject("big", "raw-1"), body)
	require.NoError(t, err)

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if dj, err := b.ops.DeadJobGet(context.Background(), "raw-1"); err == nil {
			require.Equal(t, "malformed", dj.Reason)
			require.NotEmpty(t, dj.Headers[queue.HeaderPayloadTruncated], "the body was cut to fit")
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatal("a malformed message a little under max_payload was never dead-lettered (30 s)")
}
