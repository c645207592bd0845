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

// DESIGN rule 6: a message whose deliveries run out without an outcome (it crashed every
// worker that took it) is not stranded in the work stream: the max-deliveries advisory is
// captured and the job is dead-lettered with reason max_deliveries.
func TestMaxDeliveriesDeadLettersStrandedJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{MaxAttempts: 1, MaxDeliveries: 2}
		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		// A worker of "crash" creates its consumer and the advisory capture, then leaves.
		stop := b.startWorker(t, "crash", noop, policy)
		require.Eventually(t, func() bool {
			served, err := b.client.KindServed(ctx, "crash")
			return err == nil && served
		}, 20*time.Second, 20*time.Millisecond)
		stop()
		// Another worker stays up: it handles the advisories of every kind.
		b.startWorker(t, "other", noop, levee.Policy{})

		res, err := b.client.Publish(ctx, "crash", map[string]int{"n": 1})
		require.NoError(t, err)
		b.strandJob(t, "crash", res.ID, policy.MaxDeliveries)

		st := b.waitFinal(t, res.ID, 30*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_deliveries", st.Reason)
		require.Contains(t, st.LastError, "delivered 2 times")
		e := b.dlqEntry(t, res.ID)
		require.Equal(t, "max_deliveries", e.Reason)

		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		_, err = q.FindQueued(ctx, res.ID)
		require.ErrorIs(t, err, queue.ErrNotFound, "the stranded message left the work stream")
	})
}

// A healthy job that only runs out of deliveries (its key stays busy under another job for a
// long time) is published again, never dead-lettered, and ends as that job's duplicate.
func TestMaxDeliveriesRequeuesHealthyJob(t *testing.T) {
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

		// B's two deliveries find the key busy; wait past a few advisories' worth of time.
		time.Sleep(6 * time.Second)
		_, err = b.client.DeadJob(ctx, bj.ID)
		require.ErrorIs(t, err, levee.ErrJobNotFound, "a job with a healthy key is not dead-lettered")

		close(release)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, a.ID, 20*time.Second).State)
		st := b.waitFinal(t, bj.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, a.ID, st.DuplicateOf)
	})
}
