package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 6: a message past MaxDeliver stays in the work stream; StrandedCandidates finds
// it once it is old enough, and never a message the consumer still tracks (pending: held by a
// worker, nakked with a delay, or waiting for redelivery).
func TestStrandedCandidates(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
			_, err := q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "crash", MaxDeliver: 2, AckWait: time.Minute})
			require.NoError(t, err)
			js, err := jetstream.New(leveetest.Conn(t, srv.URL))
			require.NoError(t, err)
			cons, err := js.Consumer(ctx, q.Names().JobsStream(), q.Names().Consumer("crash"))
			require.NoError(t, err)

			publishJobs(t, q, "crash", "poison")
			publishJobs(t, q, "crash", "healthy")
			job, err := q.FindQueued(ctx, "poison")
			require.NoError(t, err)
			poison := job.Sequence
			job, err = q.FindQueued(ctx, "healthy")
			require.NoError(t, err)
			healthySeq := job.Sequence

			later := time.Now().Add(time.Hour)
			none, err := q.StrandedCandidates(ctx, "crash", later, 10)
			require.NoError(t, err)
			require.Empty(t, none, "nothing was delivered yet")

			// The poison is delivered twice and nakked, the healthy job is held (pending); pulls
			// go on until the server has given up on the poison (a pull finds it due for a
			// third delivery): only the healthy job is pending then.
			var held jetstream.Msg
			poisonDeliveries := uint64(0)
			for deadline := time.Now().Add(20 * time.Second); ; {
				require.True(t, time.Now().Before(deadline), "poison delivered %d times, healthy held %v", poisonDeliveries, held != nil)
				batch, err := cons.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
				require.NoError(t, err)
				for m := range batch.Messages() {
					md, err := m.Metadata()
					require.NoError(t, err)
					if md.Sequence.Stream == poison {
						require.LessOrEqual(t, md.NumDelivered, uint64(2))
						poisonDeliveries = md.NumDelivered
						require.NoError(t, m.Nak())
						continue
					}
					require.Equal(t, healthySeq, md.Sequence.Stream)
					held = m
				}
				ci, err := cons.Info(ctx)
				require.NoError(t, err)
				if held != nil && poisonDeliveries == 2 && ci.NumAckPending == 1 {
					break
				}
			}
			got, err := q.StrandedCandidates(ctx, "crash", later, 10)
			require.NoError(t, err)
			require.NotContains(t, got, healthySeq, "a held message is pending: never a candidate")
			require.Subset(t, []uint64{poison}, got)

			none, err = q.StrandedCandidates(ctx, "crash", time.Now().Add(-time.Hour), 10)
			require.NoError(t, err)
			require.Empty(t, none, "younger than the threshold")

			require.NoError(t, held.DoubleAck(ctx))
			require.Eventually(t, func() bool {
				got, err := q.StrandedCandidates(ctx, "crash", later, 10)
				return err == nil && len(got) == 1 && got[0] == poison
			}, 5*time.Second, 50*time.Millisecond, "once nothing is pending below it, the stranded message is a candidate")
			_, err = q.FindQueued(ctx, "poison")
			require.NoError(t, err, "it is still in the work stream")
		})
	}
}
