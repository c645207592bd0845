package levee_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
)

func TestHappyPath(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var calls atomic.Int32
		b.startWorker(t, "greet", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			var p struct{ Name string }
			if err := job.Decode(&p); err != nil {
				return nil, levee.Permanent(err)
			}
			return map[string]any{"greeting": "hello " + p.Name, "attempt": job.Attempt}, nil
		}), levee.Policy{})

		res, err := b.client.Publish(ctx, "greet", map[string]string{"name": "ada"})
		require.NoError(t, err)
		require.Len(t, res.ID, 26, "ids are ULIDs by default")
		require.Equal(t, res.ID, res.Key, "the key defaults to the id")
		require.False(t, res.Duplicate)

		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 1, st.Attempts)
		require.JSONEq(t, `{"greeting":"hello ada","attempt":1}`, string(st.Result))
		require.NotNil(t, st.EnqueuedAt)
		require.NotNil(t, st.StartedAt)
		require.NotNil(t, st.FinishedAt)
		require.EqualValues(t, 1, calls.Load())

		// Publishing the same id again within the dedup window stores once.
		again, err := b.client.Publish(ctx, "greet", map[string]string{"name": "ada"}, levee.WithID(res.ID))
		require.NoError(t, err)
		require.True(t, again.Duplicate)
	})
}

// Scenario 1: the ack is lost after the commit; the redelivery finds the key succeeded and acks
// without running the handler again.
func TestRedeliveryAfterLostAckRunsOnce(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		var calls atomic.Int32
		var skipped atomic.Int32
		b.startWorker(t, "once", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			return nil, nil
		}), levee.Policy{AckWait: time.Second}, func(c *levee.WorkerConfig) {
			levee.SetSkipAck(c, func(string) bool { return skipped.Add(1) == 1 })
		})
		res, err := b.client.Publish(context.Background(), "once", json.RawMessage(`{}`))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, res.ID, 20*time.Second).State)

		// Wait for the redelivery (AckWait 1s) to be seen and acked: the stream empties.
		require.Eventually(t, func() bool {
			_, err := b.client.Status(context.Background(), res.ID)
			return err == nil && skipped.Load() >= 1 && streamEmpty(t, b)
		}, 20*time.Second, 50*time.Millisecond)
		require.EqualValues(t, 1, calls.Load(), "the handler ran once although the message was delivered twice")
	})
}
