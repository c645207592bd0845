package idempotency_test

import (
	"context"
	"fmt"
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

// A success's attempt is its key's row (migration 00005): the finish writes no attempts row
// for it, and the job's attempts still end with it, with its worker; a failure before it is
// in the attempts table. A success row written before the migration is not read twice.
func TestSuccessAttemptIsTheKeysRow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := leveetest.Pool(t)
	ns := leveetest.Namespace(t)
	l := leveetest.Ledger(t, ns)
	c := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: c.Fence},
		State: idempotency.StateRetrying, Error: "503", Attempt: idempotency.AttemptFailed, Worker: "w1"}))
	c = claimOne(t, l, req("j1", "k1", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, c.Status)
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: c.Fence},
		State: idempotency.StateSucceeded, Result: []byte(`1`), Attempt: idempotency.AttemptSucceeded, Worker: "w2"}))

	var rows int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(*) FROM `+ns+`.attempts WHERE job_id = 'j1'`).Scan(&rows))
	require.Equal(t, 1, rows, "only the failure has a row of its own")
	attempts, err := l.Attempts(ctx, "j1")
	require.NoError(t, err)
	require.Len(t, attempts, 2)
	require.Equal(t, "failed", attempts[0].Outcome)
	require.Equal(t, "w1", attempts[0].Worker)
	require.Equal(t, 2, attempts[1].N)
	require.Equal(t, "succeeded", attempts[1].Outcome)
	require.Equal(t, "w2", attempts[1].Worker)
	require.NotNil(t, attempts[1].FinishedAt)

	// As a ledger written before the migration holds it: a success row, no worker on the key.
	_, err = pool.Exec(ctx, `UPDATE `+ns+`.keys SET worker = NULL WHERE key = 'k1';
INSERT INTO `+ns+`.attempts (job_id, fence, kind, n, started_at, finished_at, outcome, worker)
SELECT job_id, fence, kind, attempts, started_at, finished_at, 'succeeded', 'w-old' FROM `+ns+`.keys WHERE key = 'k1'`)
	require.NoError(t, err)
	attempts, err = l.Attempts(ctx, "j1")
	require.NoError(t, err)
	require.Len(t, attempts, 2, "the old success row is read from the key, once")
	require.Equal(t, "w-old", attempts[1].Worker)
}

// A finish writes no indexed column and finds room on its page (migration 00006): the key's
// update is HOT, adding no index entries. The reaper still finds old keys, through the
// listing index.
func TestFinishIsHOTAndReapStillFindsOldKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := leveetest.Pool(t)
	ns := leveetest.Namespace(t)
	l := leveetest.Ledger(t, ns)
	const n = 64 // a group commit's size
	reqs := make([]idempotency.ClaimRequest, n)
	for i := range reqs {
		reqs[i] = req(fmt.Sprintf("j%d", i), fmt.Sprintf("k%d", i), "p", time.Minute)
		reqs[i].EnqueuedAt = time.Now().Add(-time.Hour)
	}
	res, err := l.Claim(ctx, reqs)
	require.NoError(t, err)
	outs := make([]idempotency.Outcome, n)
	for i, r := range res {
		require.Equal(t, idempotency.Claimed, r.Status)
		outs[i] = idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: reqs[i].Key, Fence: r.Fence},
			State: idempotency.StateSucceeded, Result: []byte(`{"ok":true}`), Attempt: idempotency.AttemptSucceeded, Worker: "w"}
	}
	applied, err := l.Finish(ctx, outs)
	require.NoError(t, err)
	require.NotContains(t, applied, false)
	// Statistics reach pg_stat_user_tables within about a second of the commit.
	var upd, hot int64
	require.Eventually(t, func() bool {
		require.NoError(t, pool.QueryRow(ctx, `SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
WHERE schemaname = $1 AND relname = 'keys'`, ns).Scan(&upd, &hot))
		return upd >= n
	}, 10*time.Second, 100*time.Millisecond)
	t.Logf("%d of %d finishes were HOT", hot, upd)
	// The worst case: all the keys of a page claimed and finished in one statement each, so no
	// old version can be pruned meanwhile, and each row grows by its result and worker. 56 of
	// 64 here; none were before migration 00006.
	require.GreaterOrEqual(t, hot*4, upd*3, "three finishes in four at least are HOT updates")

	// Finished a moment ago, enqueued an hour ago: not yet past a 30-minute retention.
	reaped, err := l.Reap(ctx, 30*time.Minute, 1000)
	require.NoError(t, err)
	require.Zero(t, reaped)
	_, err = pool.Exec(ctx, `UPDATE `+ns+`.keys SET finished_at = now() - interval '40 minutes' WHERE key < 'k5'`)
	require.NoError(t, err)
	reaped, err = l.Reap(ctx, 30*time.Minute, 1000)
	require.NoError(t, err)
	require.EqualValues(t, 45, reaped, "k0-k4, k10-k49: the keys before k5")
}
