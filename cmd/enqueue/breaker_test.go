package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
)

// 'breaker reset' closes the fleet's breaker once for every worker and says how many of the
// live workers serving the kind applied it.
func TestBreakerResetAcknowledged(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var failing atomic.Bool
	failing.Store(true)
	h := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		if failing.Load() {
			return nil, errors.New("downstream down")
		}
		return "ok", nil
	})
	for _, id := range []string{"w1", "w2"} {
		w, err := levee.NewWorker(levee.WorkerConfig{ID: id,
			NATSURL: b.natsURL, DatabaseURL: b.dbURL, Namespace: b.ns, SkipMigrate: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		require.NoError(t, err)
		require.NoError(t, w.Handle("pay", h, levee.Policy{Concurrency: 1,
			Breaker: levee.BreakerPolicy{MinCalls: 1, FailureRate: 1, OpenFor: time.Hour}}))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
	q := leveetest.Queue(t, b.natsURL, b.ns)
	b.publish(t, "pay", `{}`)
	require.Eventually(t, func() bool {
		entries, err := fleet.New(q).Entries(context.Background())
		require.NoError(t, err)
		open := 0
		for _, e := range entries["pay"] {
			if e.Breaker == "open" {
				open++
			}
		}
		return open == 2
	}, 20*time.Second, 50*time.Millisecond, "one failure opens the fleet's breaker for both workers")

	failing.Store(false)
	r := b.run(t, "", "breaker", "reset", "pay", "--as", "ada", "--wait", "5s")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, "breaker reset requested for pay\nacknowledged by 2 of 2 live workers serving pay\n", r.stdout)

	r = b.run(t, "", "breaker", "reset", "nobody", "--as", "ada", "--wait", "0")
	require.Equal(t, 2, r.code, "a kind nothing knows of: %s", r.stderr)
	require.Contains(t, r.stderr, `unknown kind "nobody"`)

	r = b.run(t, "", "breaker", "reset", "pay", "--wait", "-1s")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "--wait must not be negative")
}
