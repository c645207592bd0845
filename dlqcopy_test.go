package levee_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// Design rule 34: a raw job published with JetStream publish checks meant for the work stream
// is dead-lettered (here as malformed); the DLQ used to refuse its copy forever, since the
// copy kept the checks.
func TestDeadLetterDropsPublishChecks(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		b.startWorker(t, "charge", noop, levee.Policy{})
		first, err := b.client.Publish(ctx, "charge", map[string]int{"n": 1})
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)

		nc := leveetest.Conn(t, b.nats)
		js, err := jetstream.New(nc)
		require.NoError(t, err)
		names, err := queue.NewNames(b.ns)
		require.NoError(t, err)
		m := nats.NewMsg(names.JobSubject("charge", "raw-1"))
		m.Data = []byte("not json")
		m.Header.Set("Nats-Msg-Id", "raw-1")
		m.Header.Set("X-Trace", "abc")
		_, err = js.PublishMsg(ctx, m, jetstream.WithExpectStream(names.JobsStream()),
			jetstream.WithExpectLastSequence(1), jetstream.WithExpectLastMsgID(first.ID))
		require.NoError(t, err)

		st := b.waitFinal(t, "raw-1", 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "malformed", st.Reason)
		e := b.dlqEntry(t, "raw-1")
		require.Equal(t, "malformed", e.Reason)
		require.Equal(t, "abc", e.Header.Get("X-Trace"))
		require.Empty(t, e.Header.Values("Nats-Expected-Last-Sequence"))
		require.Empty(t, e.Header.Values("Nats-Expected-Last-Msg-Id"))
	})
}

// Design rule 28: the DLQ copy of a message whose job id is no valid job id (3,500 characters)
// is stored under queue.BoundedID(id), so that `enqueue dlq show` and `list` find it by an id
// they can take.
func TestDeadJobWithLongID(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		long := strings.Repeat("é", 1750) // 3,500 bytes
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		ack, err := js.Publish(ctx, q.Names().JobSubject("charge", long), []byte(`{"a":1}`))
		require.NoError(t, err)
		job, err := q.JobAt(ctx, ack.Sequence)
		require.NoError(t, err)
		require.NoError(t, q.DeadLetter(ctx, job.Env, job.Data, job.Header, queue.DeadInfo{
			Reason: "malformed", LastError: job.DecodeErr.Error(), SourceSeq: ack.Sequence,
		}))

		bounded := queue.BoundedID(long)
		dj, err := b.ops.DeadJobGet(ctx, bounded)
		require.NoError(t, err)
		require.Equal(t, bounded, dj.ID)
		require.Equal(t, bounded, dj.Key)
		require.True(t, strings.HasPrefix(q.Names().JobSubject("charge", long), dj.Headers["Levee-Original-Subject"]))
		var ids []string
		for dj, err := range b.ops.DeadJobList(ctx, admin.DeadJobListParams{Kind: "charge"}) {
			require.NoError(t, err)
			ids = append(ids, dj.ID)
		}
		require.Equal(t, []string{bounded}, ids)
	})
}
