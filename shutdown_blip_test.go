package levee_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// A shutdown during a Postgres blip shorter than the lease does not run a job again (design
// rule 0 names both): a handler that returned before the shutdown timeout keeps retrying its
// commit for as long as its lease holds, and the worker waits for it (found by review: the
// commit was given up at the timeout, and the next worker called the handler again).
func TestShutdownDuringABlipDoesNotRunTheJobAgain(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	ctx := context.Background()
	var calls atomic.Int32
	called, release := make(chan struct{}, 8), make(chan struct{})
	handler := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		if calls.Add(1) == 1 {
			called <- struct{}{}
			<-release
		}
		return map[string]bool{"charged": true}, nil
	})
	policy := levee.Policy{AckWait: 3 * time.Second, MaxAttempts: 5}

	cfg, proxy := b.proxiedWorker(t)
	cfg.ShutdownTimeout = 300 * time.Millisecond
	w, err := levee.NewWorker(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Handle("charge", handler, policy))
	stopA := run(t, w)

	res, err := b.client.Publish(ctx, "charge", map[string]int{"cents": 42})
	require.NoError(t, err)
	select {
	case <-called:
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was never called")
	}
	blip := time.Now()
	proxy.Cut()
	close(release)                     // the handler succeeds while Postgres is unreachable
	time.Sleep(200 * time.Millisecond) // its commit is being retried
	stopped := make(chan struct{})
	go func() { stopA(); close(stopped) }() // a rolling deploy stops the worker
	time.Sleep(1500*time.Millisecond - time.Since(blip))
	proxy.Restore() // a 1.5 s blip, half the lease
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker did not stop")
	}

	b.startWorker(t, "charge", handler, policy) // the deploy's new worker
	st := b.waitFinal(t, res.ID, 30*time.Second)
	require.Equal(t, levee.StateSucceeded, st.State)
	require.EqualValues(t, 1, calls.Load(), "a shutdown during a %s Postgres blip (lease %s) called the handler again", 1500*time.Millisecond, policy.AckWait)
}
