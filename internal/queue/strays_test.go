package queue_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 35: messages on <ns>.jobs.<kind> (no id token) and <ns>.jobs.<kind>.<id>.<more>
// match no kind's consumer. Consumers of their own take them; their filters overlap no kind's
// (the work-queue stream accepts them beside the kinds' consumers and an orphan capture, on
// 2.9.10 and current servers), and WorkStats counts them.
func TestStrays(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := leveetest.Namespace(t)
			q := leveetest.Queue(t, srv.URL, ns)
			p, err := q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "charge"})
			require.NoError(t, err)
			publishJobs(t, q, "charge", "good")
			noID := publishRaw(t, q, srv.URL, ns+".jobs.charge", []byte(`{}`), nil)
			extra := publishRaw(t, q, srv.URL, ns+".jobs.charge.id1.more", []byte(`{}`), nil)
			badKind := publishRaw(t, q, srv.URL, ns+".jobs.Charge.id2.more.tokens", []byte(`{}`), nil)
			publishRaw(t, q, srv.URL, ns+".jobs.Charge.id3", []byte(`{}`), nil) // no consumer can take it

			ws, err := q.WorkStats(ctx, 0)
			require.NoError(t, err)
			require.EqualValues(t, 4, ws.Strays, "found by the subject scan")

			r, err := q.OpenStrays(ctx)
			require.NoError(t, err)
			orphans, err := q.OpenOrphanReader(ctx, "ghost", false)
			require.NoError(t, err, "an orphan capture's consumer overlaps no stray consumer")
			require.NoError(t, orphans.Close(ctx))

			ws, err = q.WorkStats(ctx, 0)
			require.NoError(t, err)
			require.EqualValues(t, 4, ws.Strays, "three on the stray consumers, one found by the scan")

			var strays []*queue.Stray
			deadline := time.Now().Add(10 * time.Second)
			for len(strays) < 3 && time.Now().Before(deadline) {
				got, err := r.Fetch(ctx, 10, time.Second)
				require.NoError(t, err)
				strays = append(strays, got...)
			}
			require.Len(t, strays, 3)
			bySeq := map[uint64]*queue.Stray{}
			for _, s := range strays {
				bySeq[s.Seq] = s
				require.NoError(t, queue.ValidateID(s.Env.ID))
				require.Equal(t, s.Env.ID, s.Env.Key)
			}
			require.Equal(t, "charge", bySeq[noID].Env.Kind)
			require.Equal(t, "subject "+ns+".jobs.charge has no job id token: publish on "+ns+".jobs.<kind>.<id>", bySeq[noID].Problem)
			require.Equal(t, "charge", bySeq[extra].Env.Kind)
			require.Contains(t, bySeq[extra].Problem, "has tokens after the job id")
			require.Equal(t, queue.StrayKind, bySeq[badKind].Env.Kind)
			require.Contains(t, bySeq[badKind].Problem, `"Charge" is no valid kind`)

			var got []*queue.Delivery
			_, err = p.Fetch(ctx, 10, time.Second, func(ds []*queue.Delivery) { got = append(got, ds...) })
			require.NoError(t, err)
			require.Len(t, got, 1, "the kind's consumer gets its job only")
			require.Equal(t, "good", got[0].Env.ID)

			for _, s := range strays {
				require.NoError(t, s.Ack(ctx))
			}
			require.NoError(t, got[0].Ack())
			require.Eventually(t, func() bool {
				ws, err := q.WorkStats(ctx, 0)
				return err == nil && ws.Strays == 1 && ws.Messages == 1
			}, 5*time.Second, 50*time.Millisecond, "the acked strays left the stream")
		})
	}
}
