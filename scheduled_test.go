package levee_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// callLog records each handler call's time by job id.
type callLog struct {
	mu    sync.Mutex
	calls map[string][]time.Time
}

func newCallLog() *callLog { return &callLog{calls: map[string][]time.Time{}} }

func (c *callLog) handler() levee.Handler {
	return levee.HandlerFunc(func(_ context.Context, job *levee.Job) (any, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls[job.ID] = append(c.calls[job.ID], time.Now())
		return nil, nil
	})
}

func (c *callLog) of(id string) []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.calls[id]...)
}

func TestDelayedJobRunsAtItsTime(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		calls := newCallLog()
		b.startWorker(t, "delayed", calls.handler(), levee.Policy{})

		res, err := b.client.Publish(ctx, "delayed", map[string]int{"n": 1}, levee.WithDelay(1500*time.Millisecond))
		require.NoError(t, err)
		require.NotNil(t, res.RunAt, "a delayed job says when it runs")
		st, err := b.client.Status(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateScheduled, st.State)
		require.NotNil(t, st.RunAt)
		require.WithinDuration(t, *res.RunAt, *st.RunAt, time.Millisecond)

		final := b.waitFinal(t, res.ID, 10*time.Second)
		require.Equal(t, levee.StateSucceeded, final.State)
		got := calls.of(res.ID)
		require.Len(t, got, 1)
		require.False(t, got[0].Before(*res.RunAt), "ran at %s, before its run_at %s", got[0], res.RunAt)
		require.Less(t, got[0].Sub(*res.RunAt), 2*time.Second, "ran %s after its run_at", got[0].Sub(*res.RunAt))

		// A time in the past runs now, through the stream.
		past, err := b.client.Publish(ctx, "delayed", 2, levee.WithRunAt(time.Now().Add(-time.Hour)))
		require.NoError(t, err)
		require.Nil(t, past.RunAt)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, past.ID, 10*time.Second).State)
	})
}

func TestDelayedPublishRefusesBadInput(t *testing.T) {
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	_, err := b.client.Publish(ctx, "k", 1, levee.WithDelay(-time.Second))
	require.ErrorContains(t, err, "invalid delay")
	_, err = b.client.Publish(ctx, "k", 1, levee.WithDelay(time.Second), levee.WithRunAt(time.Now().Add(time.Hour)))
	require.ErrorContains(t, err, "not both")

	noDB, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: b.nats, Namespace: b.ns})
	require.NoError(t, err)
	defer noDB.Close()
	_, err = noDB.Publish(ctx, "k", 1, levee.WithDelay(time.Minute))
	require.ErrorIs(t, err, levee.ErrDatabaseRequired)
}

func TestPublishTxRunsOnlyIfCommitted(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		calls := newCallLog()
		b.startWorker(t, "txjob", calls.handler(), levee.Policy{})
		pool := leveetest.Pool(t)

		// Rolled back: the job never exists.
		tx, err := pool.Begin(ctx)
		require.NoError(t, err)
		rolled, err := b.client.PublishTx(ctx, tx, "txjob", "rolled back")
		require.NoError(t, err)
		require.NoError(t, tx.Rollback(ctx))

		// Committed: runs once, soon after the commit.
		var committed levee.PublishResult
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			committed, err = b.client.PublishTx(ctx, tx, "txjob", "committed")
			return err
		}))
		committedAt := time.Now()
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, committed.ID, 10*time.Second).State)
		got := calls.of(committed.ID)
		require.Len(t, got, 1)
		require.Less(t, got[0].Sub(committedAt), time.Second, "the relay took %s", got[0].Sub(committedAt))

		// A batch in one transaction; an invalid job is refused alone.
		var results []levee.PublishResult
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			var err error
			results, err = b.client.PublishBatchTx(ctx, tx, []levee.JobSpec{
				{Kind: "txjob", Payload: 1}, {Kind: "bad kind!", Payload: 2}, {Kind: "txjob", Payload: 3, Delay: 300 * time.Millisecond},
			})
			return err
		}))
		require.NoError(t, results[0].Err)
		require.Error(t, results[1].Err)
		require.NoError(t, results[2].Err)
		for _, i := range []int{0, 2} {
			require.Equal(t, levee.StateSucceeded, b.waitFinal(t, results[i].ID, 10*time.Second).State)
			require.Len(t, calls.of(results[i].ID), 1)
		}

		// The same id published again in another transaction is a duplicate while it waits,
		// and runs once after.
		time.Sleep(500 * time.Millisecond)
		_, err = b.client.Status(ctx, rolled.ID)
		require.True(t, errors.Is(err, levee.ErrJobNotFound), "a rolled-back job is unknown, got %v", err)
		require.Empty(t, calls.of(rolled.ID))
	})
}

// keyLog counts handler calls by idempotency key.
type keyLog struct {
	mu    sync.Mutex
	calls map[string]int
}

func (k *keyLog) handler() levee.Handler {
	return levee.HandlerFunc(func(_ context.Context, job *levee.Job) (any, error) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.calls[job.Key]++
		return nil, nil
	})
}

func (k *keyLog) snapshot() map[string]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.calls)
}

// startPeriodicWorker starts a worker that serves kind and registers p.
func (b *bundle) startPeriodicWorker(t *testing.T, kind string, h levee.Handler, p levee.PeriodicJob) (stop func()) {
	t.Helper()
	w, err := levee.NewWorker(b.workerConfig(t))
	require.NoError(t, err)
	require.NoError(t, w.Handle(kind, h, levee.Policy{}))
	require.NoError(t, w.Periodic(p))
	return run(t, w)
}

func TestPeriodicTicksRunOnceAcrossTheFleet(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		calls := &keyLog{calls: map[string]int{}}
		p := levee.PeriodicJob{Name: "tick", Kind: "periodic", Every: time.Second, Payload: []byte(`{"x":1}`)}
		var stops []func()
		for range 3 {
			stops = append(stops, b.startPeriodicWorker(t, "periodic", calls.handler(), p))
		}
		time.Sleep(3500 * time.Millisecond)
		// One worker restarts: its register keeps the next tick.
		stops[0]()
		stops[0] = b.startPeriodicWorker(t, "periodic", calls.handler(), p)
		time.Sleep(2500 * time.Millisecond)
		for _, stop := range stops {
			stop()
		}
		got := calls.snapshot()
		require.GreaterOrEqual(t, len(got), 4, "ticks in 6s of every: 1s: %v", got)
		for key, n := range got {
			require.Equal(t, 1, n, "tick %s ran %d times", key, n)
			require.True(t, strings.HasPrefix(key, "periodic:tick:"), key)
		}
		// No tick was skipped while workers ran: the ticks are consecutive seconds.
		ticks := make([]time.Time, 0, len(got))
		for key := range got {
			at, err := time.Parse(time.RFC3339, strings.TrimPrefix(key, "periodic:tick:"))
			require.NoError(t, err)
			ticks = append(ticks, at)
		}
		slices.SortFunc(ticks, time.Time.Compare)
		for i := 1; i < len(ticks); i++ {
			require.Equal(t, time.Second, ticks[i].Sub(ticks[i-1]), "ticks %v", ticks)
		}
	})
}

func TestPeriodicCatchUpAfterDowntime(t *testing.T) {
	// Which missed ticks run depends on how late the first pass after the restart is, which a
	// worker's start time decides: this checks what does not (all: no tick missing; latest and
	// skip: none of the ticks due well before the restart). internal/idempotency's
	// TestPeriodicCatchUpPolicies checks each policy's choice exactly.
	for _, catchUp := range []levee.CatchUp{levee.CatchUpAll, levee.CatchUpLatest, levee.CatchUpSkip} {
		t.Run(string(catchUp), func(t *testing.T) {
			t.Parallel()
			b := setup(t, leveetest.Servers(t)[0])
			calls := &keyLog{calls: map[string]int{}}
			p := levee.PeriodicJob{Name: "catch", Kind: "catch", Every: time.Second, CatchUp: catchUp}
			stop := b.startPeriodicWorker(t, "catch", calls.handler(), p)
			time.Sleep(1500 * time.Millisecond)
			stop()
			before := len(calls.snapshot())
			require.Positive(t, before)
			time.Sleep(4 * time.Second)
			restart := time.Now()
			stop = b.startPeriodicWorker(t, "catch", calls.handler(), p)
			time.Sleep(1500 * time.Millisecond)
			stop()

			var ticks []time.Time
			for key, n := range calls.snapshot() {
				require.Equal(t, 1, n, "tick %s ran %d times", key, n)
				at, err := time.Parse(time.RFC3339, strings.TrimPrefix(key, "periodic:catch:"))
				require.NoError(t, err)
				ticks = append(ticks, at)
			}
			slices.SortFunc(ticks, time.Time.Compare)
			lastBefore := ticks[before-1]
			missed := 0 // ticks due at least a second before the restart, after the stop
			for _, at := range ticks[before:] {
				if at.Before(restart.Add(-time.Second)) {
					missed++
				}
			}
			switch catchUp {
			case levee.CatchUpAll:
				for i := 1; i < len(ticks); i++ {
					require.Equal(t, time.Second, ticks[i].Sub(ticks[i-1]), "a tick missing between %s and %s", ticks[i-1], ticks[i])
				}
				require.GreaterOrEqual(t, missed, 2, "the downtime's ticks ran")
			default:
				require.Zero(t, missed, "ticks after %s missed in the downtime ran: %v", lastBefore, ticks)
				require.Greater(t, len(ticks), before, "ticks run after the restart")
			}
		})
	}
}
