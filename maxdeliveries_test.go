package levee_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// DESIGN rule 6: a message whose deliveries run out is not stranded in the work stream: the
// max-deliveries advisory is captured and the job is dead-lettered with reason max_deliveries.
// Here job B shares its key with job A, which holds the key's lease for a long time, so every
// delivery of B is handed back (busy) until MaxDeliveries is reached.
func TestMaxDeliveriesDeadLettersStrandedJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		started, release := make(chan struct{}, 1), make(chan struct{})
		b.startWorker(t, "hold", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			started <- struct{}{}
			<-release
			return "done", nil
		}), levee.Policy{MaxAttempts: 1, MaxDeliveries: 2, AckWait: time.Second, Timeout: time.Minute})

		a, err := b.client.Publish(ctx, "hold", map[string]int{"n": 1}, levee.WithKey("k"))
		require.NoError(t, err)
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("job A did not start")
		}
		bj, err := b.client.Publish(ctx, "hold", map[string]int{"n": 1}, levee.WithKey("k"))
		require.NoError(t, err)

		st := b.waitFinal(t, bj.ID, 30*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_deliveries", st.Reason)
		require.Contains(t, st.LastError, "delivered 2 times")
		e := b.dlqEntry(t, bj.ID)
		require.Equal(t, "max_deliveries", e.Reason)
		require.Equal(t, "k", e.Key)

		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		_, err = q.FindQueued(ctx, bj.ID)
		require.ErrorIs(t, err, queue.ErrNotFound, "the stranded message left the work stream")

		close(release)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, a.ID, 20*time.Second).State, "the key's owner is unaffected")
	})
}
