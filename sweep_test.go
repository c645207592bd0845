package levee_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// Design rule 6: a message stranded past max_deliveries whose advisory was lost (here the
// advisory capture stream was missing when the server sent it) used to stay in the work stream
// forever, delivered to nobody. The periodic sweep finds it and settles it as its advisory
// would have: this job never ran alone, so it is published again, and it succeeds.
func TestSweepSettlesStrandedJobWithoutAdvisory(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{MaxAttempts: 1, MaxDeliveries: 2}
		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return "done", nil })
		stop := b.startWorker(t, "swept", noop, policy) // creates the consumer
		require.Eventually(t, func() bool {
			served, err := b.client.KindServed(ctx, "swept")
			return err == nil && served
		}, 20*time.Second, 20*time.Millisecond)
		stop()

		// The advisory is lost: nothing captures it when the server sends it. (The worker may
		// have stopped before it set up the capture.)
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		err = js.DeleteStream(ctx, strings.ToUpper(b.ns)+"_ADVISORIES")
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			require.NoError(t, err)
		}

		res, err := b.client.Publish(ctx, "swept", map[string]int{"n": 1})
		require.NoError(t, err)
		b.spendAllDeliveries(t, "swept", policy.MaxDeliveries)
		st, err := b.client.Status(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateQueued, st.State, "stranded: in the stream, delivered to nobody")

		b.startWorker(t, "swept", noop, policy, func(cfg *levee.WorkerConfig) {
			levee.SetSweep(cfg, 200*time.Millisecond, time.Second)
		})
		st = b.waitFinal(t, res.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
	})
}

// spendAllDeliveries naks every delivery of kind's consumer until the server has given up on
// its messages (delivered maxDeliveries times, no longer pending). No worker of kind may run.
func (b *bundle) spendAllDeliveries(t *testing.T, kind string, maxDeliveries int) {
	t.Helper()
	ctx := context.Background()
	cons := b.kindConsumer(t, kind)
	seen := map[uint64]uint64{}
	deadline := time.Now().Add(30 * time.Second)
	for {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		for m := range batch.Messages() {
			md, err := m.Metadata()
			require.NoError(t, err)
			seen[md.Sequence.Stream] = md.NumDelivered
			require.NoError(t, m.Nak())
		}
		ci, err := cons.Info(ctx)
		require.NoError(t, err)
		done := len(seen) > 0 && ci.NumAckPending == 0 && ci.NumPending == 0
		for _, n := range seen {
			done = done && n == uint64(maxDeliveries)
		}
		if done {
			return
		}
		require.True(t, time.Now().Before(deadline), "deliveries %v, consumer %+v", seen, ci)
	}
}
