package queue_test

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// publishRaw stores a message on subject in the work stream as plain NATS would, and returns
// its sequence.
func publishRaw(t *testing.T, q *queue.Queue, url, subject string, data []byte, hdr nats.Header) uint64 {
	t.Helper()
	js, err := leveetest.Conn(t, url).JetStream()
	require.NoError(t, err)
	m := nats.NewMsg(subject)
	m.Data = data
	for k, vs := range hdr {
		m.Header[k] = vs
	}
	ack, err := js.PublishMsg(m)
	require.NoError(t, err)
	require.Equal(t, q.Names().JobsStream(), ack.Stream)
	return ack.Sequence
}

// Design rule 34: a copy to the DLQ keeps Levee's and the user's headers but never the
// original's JetStream control headers. A raw job published with publish checks meant for the
// work stream (Nats-Expected-Last-Sequence, -Last-Msg-Id, -Stream) is dead-lettered; before,
// the DLQ refused the copy, forever.
func TestDeadLetterDropsJetStreamHeaders(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
			publishJobs(t, q, "charge", "first")
			seq := publishRaw(t, q, srv.URL, q.Names().JobSubject("charge", "raw-1"), []byte("not json"), nats.Header{
				"Nats-Msg-Id":                         {"raw-1"},
				"Nats-Expected-Stream":                {q.Names().JobsStream()},
				"Nats-Expected-Last-Sequence":         {"1"},
				"Nats-Expected-Last-Msg-Id":           {"first"},
				"Nats-Expected-Last-Subject-Sequence": {"0"},
				"X-Trace":                             {"abc"},
				"Levee-Key":                           {"order-1"},
			})
			job, err := q.JobAt(ctx, seq)
			require.NoError(t, err)
			require.ErrorIs(t, job.DecodeErr, queue.ErrMalformed)

			err = q.DeadLetter(ctx, job.Env, job.Data, job.Header, queue.DeadInfo{
				Reason: "malformed", LastError: job.DecodeErr.Error(), SourceSeq: seq,
			})
			require.NoError(t, err, "the DLQ stores the copy")
			e, err := q.GetDeadLetter(ctx, "raw-1")
			require.NoError(t, err)
			require.Equal(t, "malformed", e.Reason)
			require.Equal(t, "order-1", e.Key)
			require.Equal(t, "abc", e.Header.Get("X-Trace"), "the user's headers are kept")
			require.Equal(t, queue.DLQMsgID("raw-1", seq), e.Header.Get("Nats-Msg-Id"), "Levee sets its own")
			for _, h := range []string{"Nats-Expected-Last-Sequence", "Nats-Expected-Last-Msg-Id", "Nats-Expected-Last-Subject-Sequence"} {
				require.Empty(t, e.Header.Values(h), "%s is the original's publish check", h)
			}
			require.JSONEq(t, `"not json"`, string(e.Payload))
		})
	}
}

// Design rule 28: the DLQ copy of a job whose id is no valid job id (3,500 characters) is
// stored under BoundedID(id), as its subject token, job id and key, with its original subject
// in a bounded Levee-Original-Subject header, so that it can be found and shown by id.
func TestDeadLetterBoundsLongID(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
			long := strings.Repeat("x", 3500)
			subject := q.Names().JobSubject("charge", long)
			seq := publishRaw(t, q, srv.URL, subject, []byte(`{}`), nil)
			job, err := q.JobAt(ctx, seq)
			require.NoError(t, err)
			require.ErrorIs(t, job.DecodeErr, queue.ErrMalformed)
			require.Equal(t, long, job.Env.ID)

			info := queue.DeadInfo{Reason: "malformed", LastError: job.DecodeErr.Error(), SourceSeq: seq}
			require.NoError(t, q.DeadLetter(ctx, job.Env, job.Data, job.Header, info))
			require.NoError(t, q.DeadLetter(ctx, job.Env, job.Data, job.Header, info), "a redelivery copies it again")

			bounded := queue.BoundedID(long)
			e, err := q.GetDeadLetter(ctx, bounded)
			require.NoError(t, err, "the copy is found by its bounded id")
			require.Equal(t, bounded, e.ID)
			require.Equal(t, bounded, e.Key)
			require.Equal(t, "charge", e.Kind)
			orig := e.Header.Get("Levee-Original-Subject")
			require.True(t, strings.HasPrefix(subject, orig), "the original subject, cut: %.60q", orig)
			require.LessOrEqual(t, len(orig), 512)
			require.NotEmpty(t, orig)

			n := 0
			require.NoError(t, q.EachDeadLetter(ctx, queue.DeadFilter{}, func(e queue.DeadLetter) bool {
				n++
				require.Equal(t, bounded, e.ID)
				require.Equal(t, q.Names().DLQSubject("charge", bounded), q.Names().DLQSubject(e.Kind, e.ID))
				return true
			}))
			require.Equal(t, 1, n, "stored once: "+strconv.Itoa(n))
		})
	}
}

// A dead-letter copy made by hand with an empty body reads back with payload "" (as `dlq show
// --json` has always printed it), not null; a body that is not JSON reads as a JSON string.
func TestDeadLetterPayloadOfHandMadeCopies(t *testing.T) {
	t.Parallel()
	srv := leveetest.PrivateServers(t)[0]
	ctx := context.Background()
	q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
	js, err := leveetest.Conn(t, srv.URL).JetStream()
	require.NoError(t, err)
	for id, body := range map[string]string{"hand-empty": "", "hand-text": "not json", "hand-json": `{"a":1}`} {
		_, err := js.Publish(q.Names().DLQSubject("ok", id), []byte(body))
		require.NoError(t, err)
	}
	for id, want := range map[string]string{"hand-empty": `""`, "hand-text": `"not json"`, "hand-json": `{"a":1}`} {
		e, err := q.GetDeadLetter(ctx, id)
		require.NoError(t, err)
		require.Equal(t, want, string(e.Payload), id)
		require.Equal(t, "ok", e.Kind)
	}
}

// A job exactly at the server's limit, counting every header the publish adds, is published;
// one byte more is refused with ErrPayloadTooLarge, never the server's own refusal.
func TestPublishAtTheServerLimit(t *testing.T) {
	t.Parallel()
	srv := leveetest.PrivateServers(t)[0]
	q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
	limit := int(q.Conn().MaxPayload())
	probe, err := queue.NewEnvelope("big", "J1", "", []byte(`""`), 0, 2*limit)
	require.NoError(t, err)
	_, err = q.Publish(t.Context(), probe)
	require.NoError(t, err)
	fits := 0
	for _, n := range []int{limit - 200, limit - 150, limit - 120, limit - 100, limit - 80, limit - 60} {
		env, err := queue.NewEnvelope("big", "J"+strconv.Itoa(n), "", []byte(`"`+strings.Repeat("x", n-2)+`"`), 0, 2*limit)
		require.NoError(t, err)
		_, err = q.Publish(t.Context(), env)
		if err == nil {
			fits++
			continue
		}
		require.ErrorIs(t, err, queue.ErrPayloadTooLarge, "payload of %d bytes: %v", n, err)
	}
	require.Positive(t, fits, "a payload a little under the limit fits")
}
