package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// Design rule 30: a commit tried again after its answer was lost (the connection dropped after
// Postgres committed) is recognised as applied, since the key already holds that outcome
// under that fence; the attempt is not written twice. A commit whose fence another claim
// moved on, or whose key holds another outcome under its fence, is still not applied.
func TestFinishRecognisesACommitThatLanded(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()

	c := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	won := idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: c.Fence},
		State: idempotency.StateSucceeded, Result: []byte(`{"a":1}`), Attempt: idempotency.AttemptSucceeded, Worker: "w"}
	require.True(t, finishOne(t, l, won))
	require.True(t, finishOne(t, l, won), "the same commit again: it landed")
	attempts, err := l.Attempts(ctx, "j1")
	require.NoError(t, err)
	require.Len(t, attempts, 1, "its attempt is written once")
	other := won
	other.State, other.Result, other.Reason = idempotency.StateDead, nil, "permanent_error"
	require.False(t, finishOne(t, l, other), "another outcome under the same fence did not land")
	st, err := l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateSucceeded, st.State)

	// A retry that landed, then another claim took the key over: the fence moved on.
	c2 := claimOne(t, l, req("j2", "k2", "p", time.Minute))
	retry := idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k2", Fence: c2.Fence},
		State: idempotency.StateRetrying, Error: "503", Attempt: idempotency.AttemptFailed}
	require.True(t, finishOne(t, l, retry))
	require.True(t, finishOne(t, l, retry), "landed, and the key still holds it")
	next := claimOne(t, l, req("j2", "k2", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, next.Status)
	require.False(t, finishOne(t, l, retry), "another claim moved the fence on")
	require.False(t, finishOne(t, l, idempotency.Outcome{Lease: retry.Lease, State: idempotency.StateSucceeded}))

	// In one batch: a commit that landed before, a new one, and one whose lease was lost.
	c3 := claimOne(t, l, req("j3", "k3", "p", time.Minute))
	fresh := idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k3", Fence: c3.Fence}, State: idempotency.StateSucceeded}
	applied, err := l.Finish(ctx, []idempotency.Outcome{won, fresh, retry})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, false}, applied)
}

// The first try of a commit may still be in flight, holding its key's row, when its retry
// arrives: the retry waits for it and, once it committed, finds the outcome landed.
func TestFinishRetryWaitsForTheTryInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := leveetest.Pool(t)
	l := setup(t)
	c := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	out := idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: c.Fence},
		State: idempotency.StateSucceeded, Result: []byte(`1`), Attempt: idempotency.AttemptSucceeded}

	first, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = first.Rollback(ctx) }()
	applied, err := l.FinishTx(ctx, first, []idempotency.Outcome{out})
	require.NoError(t, err)
	require.True(t, applied[0])

	done := make(chan []bool, 1)
	go func() {
		applied, err := l.Finish(ctx, []idempotency.Outcome{out})
		if err != nil {
			applied = nil
		}
		done <- applied
	}()
	waitForLockWait(t, pool, l.Schema())
	require.NoError(t, first.Commit(ctx))
	require.Equal(t, []bool{true}, <-done)
}

// Design rule 13: a handler's transaction runs at READ COMMITTED whatever the database's
// default, so the heartbeats that extend its lease meanwhile never make its FinishTx fail.
func TestHandlerTransactionIgnoresTheDefaultIsolation(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := leveetest.Namespace(t)
			pool := ownPool(t, func(cfg *pgxpool.Config) { cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = level })
			l := leveetest.LedgerOn(t, pool, ns)
			_, err := pool.Exec(ctx, `CREATE TABLE `+ns+`.charges (id text PRIMARY KEY)`)
			require.NoError(t, err)

			c := claimOne(t, l, req("j1", "k1", "p", time.Minute))
			lease := idempotency.Lease{Kind: "charge", Key: "k1", Fence: c.Fence}
			tx, err := l.Begin(ctx)
			require.NoError(t, err)
			defer func() { _ = tx.Rollback(ctx) }()
			var iso string
			require.NoError(t, tx.QueryRow(ctx, `SHOW transaction_isolation`).Scan(&iso))
			_, err = tx.Exec(ctx, `INSERT INTO `+ns+`.charges VALUES ('ch_1')`) // the handler's effect
			require.NoError(t, err)

			alive, err := l.Heartbeat(ctx, []idempotency.Lease{lease}, time.Minute) // meanwhile
			require.NoError(t, err)
			require.Equal(t, idempotency.LeaseExtended, alive[0])

			applied, err := l.FinishTx(ctx, tx, []idempotency.Outcome{{Lease: lease, State: idempotency.StateSucceeded, Result: []byte(`1`)}})
			require.NoError(t, err)
			require.True(t, applied[0])
			require.NoError(t, tx.Commit(ctx))
			var n int
			require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+ns+`.charges`).Scan(&n))
			require.Equal(t, 1, n)
			st, err := l.Status(ctx, "j1")
			require.NoError(t, err)
			require.Equal(t, idempotency.StateSucceeded, st.State)
			require.Equal(t, "read committed", iso)
		})
	}
}

// A heartbeat skips a key whose row another statement holds (a handler's own transaction
// committing its outcome) instead of waiting for it: that lease is LeaseBusy (unknown), and
// the others of the statement are extended at once (found by review: one slow COMMIT stalled
// every lease of its kind until they were lost).
func TestHeartbeatSkipsARowHeldByACommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := setup(t)
	held := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	other := claimOne(t, l, req("j2", "k2", "p", time.Minute))
	heldLease := idempotency.Lease{Kind: "charge", Key: "k1", Fence: held.Fence}
	otherLease := idempotency.Lease{Kind: "charge", Key: "k2", Fence: other.Fence}

	tx, err := l.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	applied, err := l.FinishTx(ctx, tx, []idempotency.Outcome{{Lease: heldLease, State: idempotency.StateSucceeded}})
	require.NoError(t, err)
	require.True(t, applied[0]) // the row is locked until tx ends

	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	status, err := l.Heartbeat(hctx, []idempotency.Lease{heldLease, otherLease}, time.Minute)
	require.NoError(t, err, "the heartbeat does not wait for the held row")
	require.Equal(t, []idempotency.LeaseStatus{idempotency.LeaseBusy, idempotency.LeaseExtended}, status)

	require.NoError(t, tx.Commit(ctx))
	status, err = l.Heartbeat(ctx, []idempotency.Lease{heldLease}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, []idempotency.LeaseStatus{idempotency.LeaseLost}, status, "committed: no longer running")
}
