package levee_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// Design rule 35: messages on <ns>.jobs.<kind> (no id token) and on <ns>.jobs.<kind>.<id>.<more>
// matched no kind's consumer and stayed in the work stream forever, unseen. Stats counts them,
// and a worker dead-letters them as malformed, with a last error that says how to publish.
func TestStraysDeadLettered(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		for _, subject := range []string{b.ns + ".jobs.charge", b.ns + ".jobs.charge.id1.more"} {
			_, err := js.Publish(ctx, subject, []byte(`{"amount":1}`))
			require.NoError(t, err)
		}
		s, err := b.ops.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 2, s.StrayMessages)

		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		b.startWorker(t, "other", noop, levee.Policy{}) // any worker takes them

		var dead []leveetype.DeadJob
		require.Eventually(t, func() bool {
			dead = dead[:0]
			for dj, err := range b.ops.DeadJobList(ctx, admin.DeadJobListParams{}) {
				if err != nil {
					return false
				}
				dead = append(dead, dj)
			}
			return len(dead) == 2
		}, 20*time.Second, 50*time.Millisecond, "both strays are dead-lettered")
		errs := map[string]string{}
		for _, dj := range dead {
			require.Equal(t, "charge", dj.Kind)
			require.Equal(t, "malformed", dj.Reason)
			require.True(t, strings.HasPrefix(dj.ID, "stray-"), dj.ID)
			require.NoError(t, queue.ValidateID(dj.ID))
			require.JSONEq(t, `{"amount":1}`, string(dj.Payload))
			errs[dj.Headers[queue.HeaderOriginalSubject]] = dj.LastError
			st, err := b.client.Status(ctx, dj.ID)
			require.NoError(t, err, "the stray is recorded in the ledger")
			require.Equal(t, levee.StateDead, st.State)
			require.Equal(t, "malformed", st.Reason)
		}
		require.Equal(t, map[string]string{
			b.ns + ".jobs.charge":          "subject " + b.ns + ".jobs.charge has no job id token: publish on " + b.ns + ".jobs.<kind>.<id>",
			b.ns + ".jobs.charge.id1.more": "subject " + b.ns + ".jobs.charge.id1.more has tokens after the job id: publish on " + b.ns + ".jobs.<kind>.<id>",
		}, errs)

		require.Eventually(t, func() bool {
			s, err := b.ops.Stats(ctx)
			return err == nil && s.StrayMessages == 0
		}, 10*time.Second, 50*time.Millisecond, "the strays left the work stream")
	})
}
