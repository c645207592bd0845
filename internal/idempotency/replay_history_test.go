package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
)

// dieOnce claims kind's key for job id and finishes it dead.
func dieOnce(t *testing.T, l *idempotency.Ledger, id, kind, key string) {
	t.Helper()
	r := req(id, key, "p", time.Minute)
	r.Kind = kind
	c := claimOne(t, l, r)
	require.Equal(t, idempotency.Claimed, c.Status)
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: kind, Key: key, Fence: c.Fence},
		State: idempotency.StateDead, Reason: "permanent_error", Error: "boom", Attempt: idempotency.AttemptFailed, Worker: "w1"}))
}

// The "replayed" entry a replay adds is history, not an attempt: the activity figures do not
// count it as a failure.
func TestReplayedEntryIsNoFailedAttempt(t *testing.T) {
	l := setup(t)
	ctx := context.Background()
	dieOnce(t, l, "j1", "charge", "k1")
	_, _, err := l.Revive(ctx, "charge", "k1", "j1", nil, "ops")
	require.NoError(t, err)
	agg, err := l.Aggregate(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, agg.Kinds["charge"].Failed, "a replay is not a failed attempt")
}

// Fences count per key, attempts are kept per job id: a job id used under two kinds (an --id
// reused after the dedup window) may meet its own entry at a fence; the replay still revives.
func TestReviveWithAJobIDSharedByTwoKinds(t *testing.T) {
	l := setup(t)
	ctx := context.Background()
	dieOnce(t, l, "order-1", "refund", "r1")
	dieOnce(t, l, "order-1", "charge", "c1")
	_, _, err := l.Revive(ctx, "refund", "r1", "order-1", nil, "ops")
	require.NoError(t, err)
	before, _, err := l.Revive(ctx, "charge", "c1", "order-1", nil, "ops")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateDead, before)
	st, err := l.Status(ctx, "order-1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateRetrying, st.State)
}
