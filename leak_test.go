package levee_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// Whoever starts a goroutine stops it: after Run returns, nothing the worker started (pull
// loops, attempts, heartbeats, reaper, its NATS connection and Postgres pool) is left running.
// Not parallel, so that no other test's goroutines come and go meanwhile.
func TestWorkerRunLeavesNoGoroutines(t *testing.T) {
	natsURL, dbURL := leveetest.NATSURL(t), leveetest.DatabaseURL(t)
	ns := leveetest.Namespace(t)
	leveetest.Ledger(t, ns)
	leveetest.Queue(t, natsURL, ns)
	client, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	require.NoError(t, err)
	defer client.Close()
	res, err := client.Publish(context.Background(), "leak", map[string]int{"n": 1})
	require.NoError(t, err)

	opts := []goleak.Option{goleak.IgnoreCurrent()}
	w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns, SkipMigrate: true, Logger: testLogger(t)})
	require.NoError(t, err)
	done := make(chan struct{})
	require.NoError(t, w.Handle("leak", levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		close(done)
		return nil, nil
	}), levee.Policy{}))
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- w.Run(ctx) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("job not run")
	}
	cancel()
	require.NoError(t, <-ran)
	goleak.VerifyNone(t, opts...)

	st, err := client.Status(context.Background(), res.ID)
	require.NoError(t, err)
	require.Equal(t, levee.StateSucceeded, st.State)
}
