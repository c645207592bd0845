package levee_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// These tests hold design rule 0: a handler is called again for the same job only when its
// previous attempt failed, or its worker died, froze or lost Postgres for longer than the
// lease, and then only after that attempt was stopped.

// proxiedWorker returns a worker config whose Postgres connections go through a proxy the test
// can cut, while its NATS connection stays up.
func (b *bundle) proxiedWorker(t *testing.T) (levee.WorkerConfig, *leveetest.Proxy) {
	t.Helper()
	dbURL, err := url.Parse(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	proxy := leveetest.NewProxy(t, dbURL.Host)
	dbURL.Host = proxy.Addr()
	cfg := b.workerConfig(t)
	cfg.Pool, cfg.DatabaseURL = nil, dbURL.String()
	return cfg, proxy
}

// A worker that cannot reach Postgres cancels its running attempt (cause ErrLeaseLost) before
// any other worker can take the job over, even when the key arrives again in another message
// (a publisher's retry): the two calls never overlap (design rule 29).
func TestLeaseLostCancelsTheHandlerBeforeATakeover(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		policy := levee.Policy{AckWait: 2 * time.Second, Timeout: time.Minute, MaxAttempts: 5}
		var (
			mu          sync.Mutex
			cancelledAt time.Time
			cancelCause error
			takeoverAt  time.Time
		)
		startedA := make(chan struct{})
		var startedOnce sync.Once
		cfgA, proxy := b.proxiedWorker(t)
		cfgA.ID = "worker-a"
		wa, err := levee.NewWorker(cfgA)
		require.NoError(t, err)
		require.NoError(t, wa.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			startedOnce.Do(func() { close(startedA) })
			<-ctx.Done()
			mu.Lock()
			cancelledAt, cancelCause = time.Now(), context.Cause(ctx)
			mu.Unlock()
			return nil, ctx.Err()
		}), policy))
		run(t, wa)

		first, err := b.client.Publish(ctx, "charge", map[string]int{"cents": 42}, levee.WithKey("order-1"))
		require.NoError(t, err)
		select {
		case <-startedA:
		case <-time.After(20 * time.Second):
			t.Fatal("worker A never started the job")
		}
		proxy.Cut()

		// Worker B, with Postgres, serves the kind; the publisher sends the key again.
		b.startWorker(t, "charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			mu.Lock()
			if takeoverAt.IsZero() {
				takeoverAt = time.Now()
			}
			mu.Unlock()
			return map[string]bool{"charged": true}, nil
		}), policy, func(c *levee.WorkerConfig) { c.ID = "worker-b" })
		second, err := b.client.Publish(ctx, "charge", map[string]int{"cents": 42}, levee.WithKey("order-1"))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, second.ID, 30*time.Second).State)

		mu.Lock()
		defer mu.Unlock()
		require.False(t, cancelledAt.IsZero(), "worker A's handler was never cancelled while it could not reach Postgres")
		require.ErrorIs(t, cancelCause, levee.ErrLeaseLost)
		require.True(t, cancelledAt.Before(takeoverAt), "A cancelled at %s, B took over at %s", cancelledAt.Format(time.StampMilli), takeoverAt.Format(time.StampMilli))
		t.Logf("A's attempt cancelled %s before B took the key over", takeoverAt.Sub(cancelledAt).Round(time.Millisecond))
		proxy.Restore()
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 30*time.Second).State, "the first job is a duplicate of the work B did")
	})
}

// A Postgres blip while a handler's success is being committed must not run the job again:
// the commit is retried while the message is kept in progress (design rule 30).
func TestCommitRetriedThroughAPostgresBlip(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var calls atomic.Int32
		called, release := make(chan struct{}, 8), make(chan struct{})
		cfg, proxy := b.proxiedWorker(t)
		w, err := levee.NewWorker(cfg)
		require.NoError(t, err)
		require.NoError(t, w.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			called <- struct{}{}
			<-release
			return map[string]bool{"charged": true}, nil
		}), levee.Policy{AckWait: 3 * time.Second, MaxAttempts: 5}))
		run(t, w)

		res, err := b.client.Publish(ctx, "charge", map[string]int{"cents": 42})
		require.NoError(t, err)
		select {
		case <-called:
		case <-time.After(20 * time.Second):
			t.Fatal("the handler was never called")
		}
		proxy.Cut()
		close(release) // the handler succeeds while Postgres is unreachable
		time.Sleep(1500 * time.Millisecond)
		proxy.Restore()

		st := b.waitFinal(t, res.ID, 30*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		time.Sleep(4 * time.Second) // past AckWait: a redelivery would have run it again by now
		require.Equal(t, int32(1), calls.Load(), "the handler was called again after a Postgres blip")
		require.Equal(t, 1, st.Attempts)
	})
}

// A result Postgres cannot store as it is (a NUL in a string) fails neither its own job nor
// the others committed in the same group commit: each of the 64 is called once (design rule
// 28).
func TestOneUnstorableResultDoesNotRunItsNeighboursAgain(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		const n = 64
		var (
			mu    sync.Mutex
			calls = map[string]int{}
			ready sync.WaitGroup
		)
		ready.Add(n)
		gate := make(chan struct{})
		go func() { ready.Wait(); close(gate) }()
		b.startWorker(t, "charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			mu.Lock()
			calls[job.Key]++
			first := calls[job.Key] == 1
			mu.Unlock()
			if first {
				ready.Done()
			}
			select { // finish together, so that the outcomes share group commits
			case <-gate:
			case <-time.After(10 * time.Second):
			}
			if job.Key == "poison" {
				return map[string]string{"body": "binary\x00body", "bad": string([]byte{0xff, 0xfe})}, nil
			}
			return map[string]bool{"ok": true}, nil
		}), levee.Policy{Concurrency: n, AckWait: 3 * time.Second})

		ids := make([]string, n)
		for i := range ids {
			key := fmt.Sprintf("order-%02d", i)
			if i == n/2 {
				key = "poison"
			}
			res, err := b.client.Publish(ctx, "charge", map[string]int{"n": i}, levee.WithKey(key))
			require.NoError(t, err)
			ids[i] = res.ID
		}
		for i, id := range ids {
			st := b.waitFinal(t, id, 30*time.Second)
			if i == n/2 {
				require.True(t, st.State == levee.StateSucceeded || st.Reason == "unstorable_result",
					"the poison job is succeeded (stored sanitized) or dead with unstorable_result: %+v", st)
				continue
			}
			require.Equal(t, levee.StateSucceeded, st.State, id)
		}
		time.Sleep(4 * time.Second) // past AckWait: redeliveries would have run by now
		mu.Lock()
		defer mu.Unlock()
		for key, c := range calls {
			require.Equal(t, 1, c, "key %s called %d times", key, c)
		}
		require.Len(t, calls, n)
	})
}

// Job.Fence grows with every claim of the key, so a downstream can refuse a stale writer.
func TestHandlerSeesTheFence(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		var (
			mu     sync.Mutex
			fences []int64
		)
		b.startWorker(t, "charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			mu.Lock()
			fences = append(fences, job.Fence)
			n := len(fences)
			mu.Unlock()
			if n < 3 {
				return nil, errors.New("try again")
			}
			return nil, nil
		}), levee.Policy{MaxAttempts: 5, Backoff: levee.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}})
		res, err := b.client.Publish(context.Background(), "charge", map[string]int{"cents": 1})
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, res.ID, 20*time.Second).State)
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, fences, 3)
		require.Positive(t, fences[0])
		require.Equal(t, fences[0]+1, fences[1])
		require.Equal(t, fences[1]+1, fences[2])
	})
}
