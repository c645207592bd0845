package levee_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// levee_dlq_depth is exported by one worker of the fleet, the live worker with the smallest
// id; every worker used to read the whole DLQ for it.
func TestDLQDepthExportedByOneWorker(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		env, err := queue.NewEnvelope("charge", "dead-1", "", []byte(`{}`), 0, 0)
		require.NoError(t, err)
		require.NoError(t, q.DeadLetter(ctx, env, env.Payload, nil, queue.DeadInfo{Reason: "malformed", SourceSeq: 1}))

		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		start := func(id string) string {
			cfg := b.workerConfig(t)
			cfg.ID = id
			w, err := levee.NewWorker(cfg)
			require.NoError(t, err)
			require.NoError(t, w.Handle("charge", noop, levee.Policy{}))
			srv := httptest.NewServer(w.Handler())
			t.Cleanup(srv.Close)
			run(t, w)
			return srv.URL
		}
		leader := start("dlq-a")
		require.Eventually(t, func() bool {
			return contains(metricsText(t, leader), `levee_dlq_depth{reason="malformed"} 1`)
		}, 20*time.Second, 50*time.Millisecond, "the leader counts the DLQ")

		other := start("dlq-b")
		require.Eventually(t, func() bool {
			return contains(metricsText(t, other), `levee_in_flight{kind="charge"}`)
		}, 20*time.Second, 50*time.Millisecond, "the second worker sampled its gauges")
		time.Sleep(time.Second) // its DLQ sample follows the gauges, in the same round
		require.False(t, contains(metricsText(t, other), "levee_dlq_depth{"), "only the leader exports the DLQ depth")
		require.True(t, contains(metricsText(t, leader), `levee_dlq_depth{reason="malformed"} 1`))
	})
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
