package levee_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 34: a work stream created beforehand with limits retention and memory storage
// (as `nats stream add` makes it) was used silently: jobs succeeded but stayed in the stream,
// and a NATS restart lost every queued one. Now the worker refuses to start and the client
// refuses to publish, with one line naming the stream, the settings and the fix.
func TestForeignStreamRefused(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := leveetest.Namespace(t)
			leveetest.Ledger(t, ns)
			nc := leveetest.Conn(t, srv.URL)
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			names, err := queue.NewNames(ns)
			require.NoError(t, err)
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name: names.JobsStream(), Subjects: []string{names.JobsSubjects()},
				Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage,
			})
			require.NoError(t, err)
			q, err := queue.New(queue.Config{Conn: nc, Namespace: ns})
			require.NoError(t, err)
			t.Cleanup(func() { _ = q.DeleteStreams(context.Background()) })

			w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: srv.URL, Pool: leveetest.Pool(t), Namespace: ns,
				Logger: testLogger(t), SkipMigrate: true})
			require.NoError(t, err)
			require.NoError(t, w.Handle("noop", levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil }), levee.Policy{}))
			problems, err := w.CheckSetup(ctx)
			require.NoError(t, err)
			require.NotEmpty(t, problems)

			runCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			err = w.Run(runCtx)
			require.Error(t, err, "the worker refuses to start")
			require.NotErrorIs(t, err, context.DeadlineExceeded)
			require.ErrorIs(t, err, levee.ErrSetup)
			msg := err.Error()
			require.NotContains(t, msg, "\n", "one line")
			require.Contains(t, msg, "stream "+names.JobsStream()+" has memory storage; Levee needs file storage")
			require.Contains(t, msg, "has limits retention; Levee needs work-queue retention")

			c, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: srv.URL, Namespace: ns, Logger: testLogger(t)})
			require.NoError(t, err)
			t.Cleanup(c.Close)
			_, err = c.Publish(ctx, "noop", map[string]int{"n": 1})
			require.ErrorIs(t, err, levee.ErrSetup, "publishing into it is refused too")
			_, err = admin.New(c).Stats(ctx)
			require.ErrorIs(t, err, levee.ErrSetup)
		})
	}
}
