package queue

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

func TestFitCopy(t *testing.T) {
	t.Parallel()
	newCopy := func(body int) *nats.Msg {
		m := nats.NewMsg("levee.dlq.charge.job-1")
		m.Data = []byte(strings.Repeat("x", body))
		m.Header.Set(HeaderMsgID, "dlq:job-1:7")
		m.Header.Set(HeaderJobID, "job-1")
		m.Header.Set(HeaderReason, "permanent_error")
		m.Header.Set(HeaderLastError, strings.Repeat("e", 900))
		m.Header.Set("X-Trace", strings.Repeat("t", 300)) // the original's own header
		return m
	}

	small := newCopy(1000)
	before := msgSize(small)
	fitCopy(small, 1<<20)
	require.Equal(t, before, msgSize(small), "a copy that fits is left alone")
	require.Equal(t, strings.Repeat("t", 300), small.Header.Get("X-Trace"))

	// Shedding the original's headers and cutting the last error is enough.
	m := newCopy(4000)
	fitCopy(m, 4000+copyHeaderSlack+400)
	require.LessOrEqual(t, msgSize(m), 4000+400)
	require.Empty(t, m.Header.Get("X-Trace"))
	require.Len(t, m.Header.Get(HeaderLastError), 200)
	require.Empty(t, m.Header.Get(HeaderPayloadTruncated), "the body was not cut")
	require.Len(t, m.Data, 4000)

	// Otherwise the body is cut, and marked with its original size.
	m = newCopy(1 << 20)
	fitCopy(m, 1<<20)
	require.LessOrEqual(t, msgSize(m), 1<<20-copyHeaderSlack)
	require.Equal(t, "1048576", m.Header.Get(HeaderPayloadTruncated))
	require.Equal(t, "dlq:job-1:7", m.Header.Get(HeaderMsgID), "the copy keeps its dedup id")
	require.Equal(t, "job-1", m.Header.Get(HeaderJobID))
	require.Greater(t, len(m.Data), 1<<20-4096, "only what does not fit is cut")

	fitCopy(m, 0) // no limit: nothing to do
}

// msgSize is the size NATS counts against max_payload: the encoded headers and the body.
func msgSize(m *nats.Msg) int { return headerSize(m) + len(m.Data) }
