package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

func TestLiveCounts(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()

	counts, err := l.LiveCounts(ctx)
	require.NoError(t, err)
	require.Empty(t, counts, "a fresh ledger has no live keys")

	claim := func(kind, key string) idempotency.Lease {
		t.Helper()
		r := req("job-"+kind+"-"+key, key, "p", time.Minute)
		r.Kind = kind
		res := claimOne(t, l, r)
		require.Equal(t, idempotency.Claimed, res.Status)
		return idempotency.Lease{Kind: kind, Key: key, Fence: res.Fence}
	}
	finish := func(lease idempotency.Lease, st idempotency.State) {
		t.Helper()
		require.True(t, finishOne(t, l, idempotency.Outcome{Lease: lease, State: st, RetryIn: time.Hour, Reason: "permanent_error"}))
	}
	claim("email", "e1")
	claim("email", "e2")
	finish(claim("email", "e3"), idempotency.StateRetrying)
	finish(claim("email", "e4"), idempotency.StateSucceeded)
	finish(claim("charge", "c1"), idempotency.StateRetrying)
	finish(claim("charge", "c2"), idempotency.StateRetrying)
	finish(claim("charge", "c3"), idempotency.StateDead)
	finish(claim("gone", "g1"), idempotency.StateSucceeded)
	require.NoError(t, l.AddRecords(ctx, []idempotency.Record{{JobID: "dup", Kind: "email", Key: "e4", State: idempotency.StateSucceeded, DuplicateOf: "job-email-e4"}}))

	counts, err = l.LiveCounts(ctx)
	require.NoError(t, err)
	require.Equal(t, map[string]idempotency.LiveCount{
		"email":  {Running: 2, Retrying: 1},
		"charge": {Retrying: 2},
	}, counts, "finished keys and records are not counted; kinds with no live key are absent")
}

func TestLiveCountsBeforeMigration(t *testing.T) {
	t.Parallel()
	l, err := idempotency.New(idempotency.Config{Pool: leveetest.Pool(t), Schema: leveetest.Namespace(t)})
	require.NoError(t, err)
	counts, err := l.LiveCounts(context.Background())
	require.NoError(t, err)
	require.Empty(t, counts)
}

func TestCheckMigrated(t *testing.T) {
	t.Parallel()
	require.NoError(t, setup(t).CheckMigrated(context.Background()))
	l, err := idempotency.New(idempotency.Config{Pool: leveetest.Pool(t), Schema: leveetest.Namespace(t)})
	require.NoError(t, err)
	require.ErrorIs(t, l.CheckMigrated(context.Background()), idempotency.ErrNotMigrated)
}
