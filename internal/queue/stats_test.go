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

// statsQueue returns a Queue with its streams in a fresh namespace on url.
func statsQueue(t *testing.T, url string) *queue.Queue {
	t.Helper()
	return leveetest.Queue(t, url, leveetest.Namespace(t))
}

// publishJobs publishes one job of kind per id and returns when the stream has them.
func publishJobs(t *testing.T, q *queue.Queue, kind string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		env, err := queue.NewEnvelope(kind, id, "", []byte(`{}`), 0, 0)
		require.NoError(t, err)
		_, err = q.Publish(context.Background(), env)
		require.NoError(t, err)
	}
}

func TestWorkStats(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := statsQueue(t, srv.URL)

			ws, err := q.WorkStats(ctx, 0)
			require.NoError(t, err)
			require.Empty(t, ws.Kinds)
			require.False(t, ws.Scanned)

			before := time.Now().Add(-time.Second)
			p, err := q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "served"})
			require.NoError(t, err)
			_, err = q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "idle"})
			require.NoError(t, err)
			publishJobs(t, q, "served", "s1", "s2", "s3")

			// Every message belongs to a consumer: no subject scan (once the consumers' counts
			// have caught up with the publishes, which a loaded server may take a moment to do).
			require.Eventually(t, func() bool {
				ws, err = q.WorkStats(ctx, 0)
				return err == nil && !ws.Scanned && ws.Messages == 3
			}, 10*time.Second, 20*time.Millisecond, "last: %+v, %v", ws, err)

			publishJobs(t, q, "ghost", "g1", "g2")
			publishJobs(t, q, "zed", "z1")
			var held []*queue.Delivery
			n, err := p.Fetch(ctx, 1, 2*time.Second, func(ds []*queue.Delivery) { held = append(held, ds...) })
			require.NoError(t, err)
			require.Equal(t, 1, n)

			ws, err = q.WorkStats(ctx, 0)
			require.NoError(t, err)
			require.True(t, ws.Scanned, "messages no consumer accounts for are scanned")
			require.False(t, ws.Capped)
			require.EqualValues(t, 6, ws.Messages)
			require.ElementsMatch(t, []string{"served", "idle", "ghost", "zed"}, keys(ws.Kinds))

			served := ws.Kinds["served"]
			require.True(t, served.Consumer)
			require.EqualValues(t, 2, served.Pending)
			require.Equal(t, 1, served.InFlight)
			require.Zero(t, served.Redelivered)
			require.True(t, served.Oldest.After(before), "oldest %s", served.Oldest)

			idle := ws.Kinds["idle"]
			require.True(t, idle.Consumer)
			require.Zero(t, idle.Pending)
			require.True(t, idle.Oldest.IsZero(), "a kind with no messages has no oldest")

			ghost := ws.Kinds["ghost"]
			require.False(t, ghost.Consumer)
			require.EqualValues(t, 2, ghost.Stored)
			require.Zero(t, ghost.Pending)
			require.False(t, ghost.Oldest.IsZero())
			require.False(t, ghost.Oldest.Before(served.Oldest), "ghost jobs were published after served ones")
			require.EqualValues(t, 1, ws.Kinds["zed"].Stored)

			// Capped at one subject: the first in subject order is a ghost job; ghost is then
			// counted on its own, and zed (sorting after served) is not found.
			ws, err = q.WorkStats(ctx, 1)
			require.NoError(t, err)
			require.True(t, ws.Capped)
			require.EqualValues(t, 2, ws.Kinds["ghost"].Stored)
			require.NotContains(t, ws.Kinds, "zed")
			require.True(t, ws.Kinds["served"].Consumer)

			require.NoError(t, held[0].Nak(0))
		})
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestStatsWithoutStreams(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, srv.URL), Namespace: leveetest.Namespace(t)})
			require.NoError(t, err)
			_, err = q.WorkStats(context.Background(), 0)
			require.ErrorIs(t, err, queue.ErrNoStream)
			_, err = q.DeadStats(context.Background())
			require.ErrorIs(t, err, queue.ErrNoStream)
		})
	}
}

func TestDeadStats(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := statsQueue(t, srv.URL)

			dc, err := q.DeadStats(ctx)
			require.NoError(t, err)
			require.Zero(t, dc.Total)
			require.Empty(t, dc.ByReason)

			dead := func(kind, id, reason string, seq uint64) {
				t.Helper()
				env, err := queue.NewEnvelope(kind, id, "", []byte(`{"big":"payload"}`), 0, 0)
				require.NoError(t, err)
				require.NoError(t, q.DeadLetter(ctx, env, env.Payload, nil, queue.DeadInfo{Reason: reason, SourceSeq: seq}))
			}
			dead("email", "e1", "permanent_error", 1)
			dead("email", "e2", "max_attempts", 2)
			dead("email", "e2", "max_attempts", 2) // the same copy again: stored once
			dead("ghost", "g1", "no_handler", 3)
			dead("ghost", "g2", "no_handler", 4)
			dead("ghost", "g3", "", 5)

			dc, err = q.DeadStats(ctx)
			require.NoError(t, err)
			require.Equal(t, 5, dc.Total)
			require.Equal(t, map[string]int{"email": 2, "ghost": 3}, dc.ByKind)
			require.Equal(t, map[string]int{"permanent_error": 1, "max_attempts": 1, "no_handler": 2, "unknown": 1}, dc.ByReason)
		})
	}
}

func TestOrphanReader(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := statsQueue(t, srv.URL)
			js, err := jetstream.New(leveetest.Conn(t, srv.URL))
			require.NoError(t, err)
			stream, err := js.Stream(ctx, q.Names().JobsStream())
			require.NoError(t, err)

			publishJobs(t, q, "ghost", "g1", "g2", "g3")
			publishJobs(t, q, "other", "o1")
			r, err := q.OpenOrphanReader(ctx, "ghost", false)
			require.NoError(t, err)
			publishJobs(t, q, "ghost", "g4") // after Open: not read

			var got []*queue.Delivery
			for {
				ds, err := r.Next(ctx, 2)
				require.NoError(t, err)
				if len(ds) == 0 {
					break
				}
				got = append(got, ds...)
			}
			require.Len(t, got, 3)
			for i, d := range got {
				require.Equal(t, []string{"g1", "g2", "g3"}[i], d.Env.ID, "oldest first")
				require.NoError(t, d.DecodeErr)
				require.NotZero(t, d.StreamSeq)
			}
			require.NoError(t, r.Ack(ctx, got[0]))
			require.NoError(t, r.Ack(ctx, got[1]))

			// While the reader is open, a worker of the kind cannot create its consumer.
			_, err = q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "ghost"})
			require.Error(t, err)
			require.NoError(t, r.Close(ctx))
			require.NoError(t, r.Close(ctx), "closing twice is harmless")

			names := consumerNames(t, stream)
			require.Empty(t, names, "the temporary consumer is gone")
			info, err := stream.Info(ctx, jetstream.WithSubjectFilter(q.Names().KindFilter("ghost")))
			require.NoError(t, err)
			require.Equal(t, map[string]uint64{
				q.Names().JobSubject("ghost", "g3"): 1, q.Names().JobSubject("ghost", "g4"): 1,
			}, info.State.Subjects, "acked jobs left the stream; the rest went back")

			// A kind with a consumer is taken; through its own consumer it can be read.
			_, err = q.EnsureConsumer(ctx, queue.ConsumerConfig{Kind: "other"})
			require.NoError(t, err)
			_, err = q.OpenOrphanReader(ctx, "other", false)
			require.ErrorIs(t, err, queue.ErrKindTaken)
			r, err = q.OpenOrphanReader(ctx, "other", true)
			require.NoError(t, err)
			ds, err := r.Next(ctx, 10)
			require.NoError(t, err)
			require.Len(t, ds, 1)
			require.Equal(t, "o1", ds[0].Env.ID)
			require.NoError(t, r.Ack(ctx, ds[0]))
			ds, err = r.Next(ctx, 10)
			require.NoError(t, err)
			require.Empty(t, ds)
			require.NoError(t, r.Close(ctx))
			require.Equal(t, []string{q.Names().Consumer("other")}, consumerNames(t, stream), "the kind's consumer stays")
		})
	}
}

func consumerNames(t *testing.T, stream jetstream.Stream) []string {
	t.Helper()
	var names []string
	list := stream.ConsumerNames(context.Background())
	for n := range list.Name() {
		names = append(names, n)
	}
	require.NoError(t, list.Err())
	return names
}
