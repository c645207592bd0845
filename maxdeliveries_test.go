package levee_test

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// design rule 6: a message whose deliveries run out without an outcome (it crashed every
// worker that took it) is not stranded in the work stream: the max-deliveries advisory is
// captured and the job is dead-lettered with reason max_deliveries. A job that never ran
// alone in a worker (here no worker ran it at all) is first published again, MaxRequeues
// times, in case it was only a bystander of another job that crashed the workers.
func TestMaxDeliveriesDeadLettersStrandedJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{MaxAttempts: 1, MaxDeliveries: 2}
		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		// A worker of "crash" creates its consumer and the advisory capture, then leaves.
		stop := b.startWorker(t, "crash", noop, policy)
		require.Eventually(t, func() bool {
			served, err := b.client.KindServed(ctx, "crash")
			return err == nil && served
		}, 20*time.Second, 20*time.Millisecond)
		stop()
		// Another worker stays up: it handles the advisories of every kind.
		b.startWorker(t, "other", noop, levee.Policy{})

		res, err := b.client.Publish(ctx, "crash", map[string]int{"n": 1})
		require.NoError(t, err)
		messages := b.strandJob(t, "crash", res.ID, policy.MaxDeliveries)
		require.Equal(t, 1+idempotency.MaxRequeues, messages, "the job was published again before it was dead-lettered")

		st := b.waitFinal(t, res.ID, 30*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_deliveries", st.Reason)
		require.Contains(t, st.LastError, "delivered 2 times")
		e := b.dlqEntry(t, res.ID)
		require.Equal(t, "max_deliveries", e.Reason)

		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		_, err = q.FindQueued(ctx, res.ID)
		require.ErrorIs(t, err, queue.ErrNotFound, "the stranded message left the work stream")
	})
}

// A healthy job that only runs out of deliveries (its key stays busy under another job for a
// long time) is published again, never dead-lettered, and ends as that job's duplicate.
func TestMaxDeliveriesRequeuesHealthyJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		started, release := make(chan struct{}, 1), make(chan struct{})
		b.startWorker(t, "hold", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			started <- struct{}{}
			<-release
			return "done", nil
		}), levee.Policy{MaxAttempts: 1, MaxDeliveries: 2, AckWait: time.Second, Timeout: time.Minute})

		a, err := b.client.Publish(ctx, "hold", map[string]int{"n": 1}, levee.WithKey("k"))
		require.NoError(t, err)
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("job A did not start")
		}
		bj, err := b.client.Publish(ctx, "hold", map[string]int{"n": 1}, levee.WithKey("k"))
		require.NoError(t, err)

		// B's two deliveries find the key busy; wait past a few advisories' worth of time.
		time.Sleep(6 * time.Second)
		_, err = b.ops.DeadJobGet(ctx, bj.ID)
		require.ErrorIs(t, err, levee.ErrJobNotFound, "a job with a healthy key is not dead-lettered")

		close(release)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, a.ID, 20*time.Second).State)
		st := b.waitFinal(t, bj.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, a.ID, st.DuplicateOf)
	})
}

// A message on its last delivery runs alone in its worker: it waits until the worker holds
// no other message and nothing is pulled meanwhile, so that if it is a poison that crashes
// the process, no healthy job is charged a delivery with it (and if it is a healthy job that
// only stood beside a poison before, it finishes).
func TestLastDeliveryRunsAlone(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{MaxAttempts: 1, MaxDeliveries: 2, Concurrency: 8}
		noop := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
		stop := b.startWorker(t, "solo", noop, policy) // creates the consumer
		require.Eventually(t, func() bool {
			served, err := b.client.KindServed(ctx, "solo")
			return err == nil && served
		}, 20*time.Second, 20*time.Millisecond)
		stop()

		// The last-chance job has spent one of its two deliveries; the others are fresh.
		last, err := b.client.Publish(ctx, "solo", map[string]string{"role": "last"})
		require.NoError(t, err)
		b.spendDeliveries(t, "solo", 1)
		var ids []string
		for i := range 24 {
			res, err := b.client.Publish(ctx, "solo", map[string]int{"n": i})
			require.NoError(t, err)
			ids = append(ids, res.ID)
		}

		var (
			running  atomic.Int32
			mostElse atomic.Int32 // most handlers seen at once by the other jobs
			lastSaw  atomic.Int32 // most handlers seen at once while the last chance ran
		)
		observe := func(into *atomic.Int32, n int32) {
			for {
				cur := into.Load()
				if n <= cur || into.CompareAndSwap(cur, n) {
					return
				}
			}
		}
		h := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			into := &mostElse
			if job.ID == last.ID {
				into = &lastSaw
			}
			observe(into, n)
			time.Sleep(100 * time.Millisecond)
			observe(into, running.Load())
			return nil, nil
		})
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		require.NoError(t, w.Handle("solo", h, policy))
		srv := httptest.NewServer(w.Handler())
		t.Cleanup(srv.Close)
		run(t, w)

		st := b.waitFinal(t, last.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		for _, id := range ids {
			require.Equal(t, levee.StateSucceeded, b.waitFinal(t, id, 30*time.Second).State, "job %s", id)
		}
		require.EqualValues(t, 1, lastSaw.Load(), "the last chance ran alone")
		require.Greater(t, mostElse.Load(), int32(1), "the other jobs ran side by side (the test would prove nothing otherwise)")
		require.Contains(t, metricsText(t, srv.URL), `levee_last_chances_total{kind="solo"} 1`)
	})
}

// A job whose attempt budget was spent by workers lost mid-attempt gets one more attempt,
// alone in its worker, instead of dying with max_attempts: the workers may have crashed on
// another job they held. Its key is given back while it waits for its turn.
func TestLostAttemptsGetALastChanceAlone(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{MaxAttempts: 2, MaxDeliveries: 10, Concurrency: 4, AckWait: time.Second, Timeout: time.Minute}
		var calls atomic.Int32
		started := make(chan struct{}, 1)
		h := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			if calls.Add(1) == 1 {
				started <- struct{}{}
				<-ctx.Done() // cancelled when its lease is found taken over
				return nil, ctx.Err()
			}
			return "ok", nil
		})
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		require.NoError(t, w.Handle("lost", h, policy))
		srv := httptest.NewServer(w.Handler())
		t.Cleanup(srv.Close)
		run(t, w)

		res, err := b.client.Publish(ctx, "lost", map[string]int{"n": 1})
		require.NoError(t, err)
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("the first attempt did not start")
		}
		// As if two workers had died mid-attempt: the budget is spent, the lease lapsed, and
		// the fence moved on (the running attempt finds its lease lost and writes nothing).
		tag, err := leveetest.Pool(t).Exec(ctx, "UPDATE "+b.ns+".keys SET attempts = 2, fence = fence + 1, lease_until = now() - interval '1 second' WHERE job_id = $1", res.ID)
		require.NoError(t, err)
		require.EqualValues(t, 1, tag.RowsAffected())

		st := b.waitFinal(t, res.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State, "%+v", st)
		require.Equal(t, 3, st.Attempts, "the last chance is attempt max_attempts+1")
		require.EqualValues(t, 2, calls.Load())
		require.Contains(t, metricsText(t, srv.URL), `levee_last_chances_total{kind="lost"} 1`)
	})
}
