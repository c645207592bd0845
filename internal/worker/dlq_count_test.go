package worker

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// fakeDLQ is a DLQ in memory: entries by sequence, with the reads the counter makes.
type fakeDLQ struct {
	created time.Time
	lastSeq uint64
	entries map[uint64]string // seq → reason
	reads   []uint64          // AfterSeq of each read
	read    int               // entries read in all
}

func newFakeDLQ() *fakeDLQ { return &fakeDLQ{created: time.Unix(1, 0), entries: map[uint64]string{}} }

func (f *fakeDLQ) add(reasons ...string) {
	for _, r := range reasons {
		f.lastSeq++
		f.entries[f.lastSeq] = r
	}
}

func (f *fakeDLQ) DLQState(context.Context) (uint64, uint64, time.Time, error) {
	return uint64(len(f.entries)), f.lastSeq, f.created, nil
}

func (f *fakeDLQ) EachDeadLetter(_ context.Context, flt queue.DeadFilter, fn func(queue.DeadLetter) bool) error {
	f.reads = append(f.reads, flt.AfterSeq)
	for seq := flt.AfterSeq + 1; seq <= min(f.lastSeq, flt.UpToSeq); seq++ {
		if r, ok := f.entries[seq]; ok {
			f.read++
			if !fn(queue.DeadLetter{DeadJob: leveetype.DeadJob{Sequence: seq, Reason: r}}) {
				return nil
			}
		}
	}
	return nil
}

func TestDLQCounterIncremental(t *testing.T) {
	ctx := context.Background()
	f := newFakeDLQ()
	c := newDLQCounter(f)

	require.NoError(t, c.update(ctx))
	require.Empty(t, c.byReason)
	require.Empty(t, f.reads, "an empty DLQ is not read")

	f.add("malformed", "max_attempts", "malformed")
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"malformed": 2, "max_attempts": 1}, c.byReason)
	require.Equal(t, 3, f.read)

	// Growth: only the new entries are read.
	f.add("permanent_error", "")
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"malformed": 2, "max_attempts": 1, "permanent_error": 1, "unknown": 1}, c.byReason)
	require.Equal(t, 5, f.read, "two more read, not five")
	require.Equal(t, uint64(3), f.reads[len(f.reads)-1])
	require.Equal(t, 1, c.rescans, "one full count, at the start")

	// Nothing new: nothing read.
	reads := len(f.reads)
	require.NoError(t, c.update(ctx))
	require.Len(t, f.reads, reads)

	// A replay or purge removes entries: the message count tells, and everything is counted again.
	delete(f.entries, 1)
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"malformed": 1, "max_attempts": 1, "permanent_error": 1, "unknown": 1}, c.byReason)
	require.Equal(t, 2, c.rescans)

	// A removal hidden behind as many new entries (the count alone is unchanged) is caught too.
	delete(f.entries, 2)
	f.add("no_handler")
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"malformed": 1, "no_handler": 1, "permanent_error": 1, "unknown": 1}, c.byReason)
	require.Equal(t, 3, c.rescans)

	// A stream deleted and created again is another stream.
	f2 := newFakeDLQ()
	f2.created = time.Unix(2, 0)
	f2.add("cancelled", "cancelled", "cancelled", "cancelled", "cancelled", "cancelled")
	c.src = f2
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"cancelled": 6}, c.byReason)
	require.Equal(t, 4, c.rescans)

	// Everything purged.
	clear(f2.entries)
	require.NoError(t, c.update(ctx))
	require.Empty(t, c.byReason)

	// A worker that stops leading forgets; leading again, it counts from the start.
	f2.add("malformed")
	c.forget()
	require.NoError(t, c.update(ctx))
	require.Equal(t, map[string]int{"malformed": 1}, c.byReason)
}

// The counter on a real DLQ stream: growth is read incrementally, a purge makes it count again.
func TestDLQCounterOnStream(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
			kill := func(id, reason string, seq uint64) {
				env, err := queue.NewEnvelope("charge", id, "", []byte(`{}`), 0, 0)
				require.NoError(t, err)
				require.NoError(t, q.DeadLetter(ctx, env, env.Payload, nil, queue.DeadInfo{Reason: reason, SourceSeq: seq}))
			}
			c := newDLQCounter(q)
			require.NoError(t, c.update(ctx))
			require.Empty(t, c.byReason)

			kill("a", "malformed", 1)
			kill("b", "max_attempts", 2)
			require.NoError(t, c.update(ctx))
			require.Equal(t, map[string]int{"malformed": 1, "max_attempts": 1}, c.byReason)
			rescans := c.rescans

			kill("c", "malformed", 3)
			require.NoError(t, c.update(ctx))
			require.Equal(t, map[string]int{"malformed": 2, "max_attempts": 1}, c.byReason)
			require.Equal(t, rescans, c.rescans, "growth is read incrementally")
			require.EqualValues(t, 3, c.lastSeq)

			e, err := q.GetDeadLetter(ctx, "a")
			require.NoError(t, err)
			require.NoError(t, q.DeleteDeadLetter(ctx, e.Sequence)) // a purge
			kill("d", "cancelled", 4)
			require.NoError(t, c.update(ctx))
			require.Equal(t, map[string]int{"malformed": 1, "max_attempts": 1, "cancelled": 1}, c.byReason)
			require.Equal(t, rescans+1, c.rescans, "a removal makes it count again")
		})
	}
}
