package idempotency_test

import (
	"context"
	"fmt"
	"io/fs"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/migrations"
)

func setup(t *testing.T) *idempotency.Ledger {
	t.Helper()
	return leveetest.Ledger(t, leveetest.Namespace(t))
}

func req(id, key, payload string, lease time.Duration) idempotency.ClaimRequest {
	return idempotency.ClaimRequest{JobID: id, Kind: "charge", Key: key, PayloadHash: []byte(payload), Lease: lease, EnqueuedAt: time.Now()}
}

func claimOne(t *testing.T, l *idempotency.Ledger, r idempotency.ClaimRequest) idempotency.ClaimResult {
	t.Helper()
	res, err := l.Claim(context.Background(), []idempotency.ClaimRequest{r})
	require.NoError(t, err)
	return res[0]
}

func finishOne(t *testing.T, l *idempotency.Ledger, o idempotency.Outcome) bool {
	t.Helper()
	applied, err := l.Finish(context.Background(), []idempotency.Outcome{o})
	require.NoError(t, err)
	return applied[0]
}

func TestMigrateTwiceIsNoop(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	leveetest.Ledger(t, ns)
	applied, err := idempotency.Migrate(context.Background(), leveetest.Pool(t), ns, nil)
	require.NoError(t, err)
	require.Empty(t, applied)
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	pool := leveetest.Pool(t)
	t.Cleanup(func() { _ = idempotency.DropSchema(context.Background(), pool, ns) })
	var wg sync.WaitGroup
	errs := make([]error, 4)
	counts := make([]int, 4)
	for i := range 4 {
		wg.Go(func() {
			applied, err := idempotency.Migrate(context.Background(), pool, ns, nil)
			errs[i], counts[i] = err, len(applied)
		})
	}
	wg.Wait()
	total := 0
	for i := range 4 {
		require.NoError(t, errs[i])
		total += counts[i]
	}
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.Equal(t, len(files), total, "each migration is applied exactly once across concurrent starters")
}

func TestClaimFinishSucceeded(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()

	res := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, res.Status)
	require.EqualValues(t, 1, res.Fence)
	require.Equal(t, 1, res.Attempts)

	st, err := l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateRunning, st.State)

	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: res.Fence},
		State: idempotency.StateSucceeded, Result: []byte(`{"ok":true}`)}))

	st, err = l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateSucceeded, st.State)
	require.JSONEq(t, `{"ok":true}`, string(st.Result))
	require.NotNil(t, st.FinishedAt)

	// The same job redelivered, and another job with the same key: both are duplicates.
	again := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	require.Equal(t, idempotency.AlreadySucceeded, again.Status)
	require.Equal(t, "j1", again.Owner)
	other := claimOne(t, l, req("j2", "k1", "p", time.Minute))
	require.Equal(t, idempotency.AlreadySucceeded, other.Status)
	require.Equal(t, "j1", other.Owner)

	require.NoError(t, l.AddRecords(ctx, []idempotency.Record{{JobID: "j2", Kind: "charge", Key: "k1", State: idempotency.StateSucceeded, DuplicateOf: "j1"}}))
	st, err = l.Status(ctx, "j2")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateSucceeded, st.State)
	require.Equal(t, "j1", st.DuplicateOf)
	require.Zero(t, st.Attempts, "a duplicate ran no attempt of its own")
	require.JSONEq(t, `{"ok":true}`, string(st.Result), "a duplicate reports the result of the job that did the work")

	_, err = l.Status(ctx, "nope")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}

func TestClaimLiveLeaseIsBusy(t *testing.T) {
	t.Parallel()
	l := setup(t)
	require.Equal(t, idempotency.Claimed, claimOne(t, l, req("j1", "k", "p", time.Minute)).Status)
	res := claimOne(t, l, req("j2", "k", "p", time.Minute))
	require.Equal(t, idempotency.Busy, res.Status)
	require.Greater(t, res.Wait, 50*time.Second, "busy waits for the remaining lease")
}

func TestClaimPayloadMismatch(t *testing.T) {
	t.Parallel()
	l := setup(t)
	require.Equal(t, idempotency.Claimed, claimOne(t, l, req("j1", "k", "p1", time.Minute)).Status)
	res := claimOne(t, l, req("j2", "k", "p2", time.Minute))
	require.Equal(t, idempotency.PayloadMismatch, res.Status)
	require.Equal(t, "j1", res.Owner)
}

func TestClaimBatchWithRepeatedKey(t *testing.T) {
	t.Parallel()
	l := setup(t)
	res, err := l.Claim(context.Background(), []idempotency.ClaimRequest{
		req("a", "k1", "p", time.Minute), req("b", "k2", "p", time.Minute), req("c", "k1", "p", time.Minute),
	})
	require.NoError(t, err)
	require.Equal(t, idempotency.Claimed, res[0].Status)
	require.Equal(t, idempotency.Claimed, res[1].Status)
	require.Equal(t, idempotency.Busy, res[2].Status, "a key repeated within one batch is claimed once")
}

// Scenario 3 at the ledger level: a zombie whose lease expired and whose key was claimed by
// another worker writes nothing.
func TestZombieFencedWriteUpdatesNothing(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()

	zombie := claimOne(t, l, req("j1", "k", "p", 200*time.Millisecond))
	require.Equal(t, idempotency.Claimed, zombie.Status)
	time.Sleep(300 * time.Millisecond) // let the lease expire on the database clock

	owner := claimOne(t, l, req("j1", "k", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, owner.Status)
	require.Equal(t, zombie.Fence+1, owner.Fence)
	require.Equal(t, 2, owner.Attempts)

	zl := idempotency.Lease{Kind: "charge", Key: "k", Fence: zombie.Fence}
	alive, err := l.Heartbeat(ctx, []idempotency.Lease{zl}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, idempotency.LeaseLost, alive[0], "the zombie's heartbeat finds its lease lost")
	require.False(t, finishOne(t, l, idempotency.Outcome{Lease: zl, State: idempotency.StateDead, Reason: "permanent_error", Error: "zombie"}))
	require.False(t, finishOne(t, l, idempotency.Outcome{Lease: zl, State: idempotency.StateSucceeded, Result: []byte(`1`)}))

	st, err := l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateRunning, st.State, "the zombie changed nothing")

	ol := idempotency.Lease{Kind: "charge", Key: "k", Fence: owner.Fence}
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: ol, State: idempotency.StateSucceeded, Result: []byte(`2`)}))
	st, err = l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateSucceeded, st.State)
	require.Equal(t, "2", string(st.Result))
}

func TestRetryingRespectsNextAttemptAndRelease(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	first := claimOne(t, l, req("j1", "k", "p", time.Minute))
	lease := idempotency.Lease{Kind: "charge", Key: "k", Fence: first.Fence}
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: lease, State: idempotency.StateRetrying, Error: "503", RetryIn: time.Hour}))

	early := claimOne(t, l, req("j1", "k", "p", time.Minute))
	require.Equal(t, idempotency.Busy, early.Status, "a retry is not claimed before it is due")
	require.Greater(t, early.Wait, 59*time.Minute)

	st, err := l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateRetrying, st.State)
	require.Equal(t, "503", st.LastError)
	require.NotNil(t, st.NextAttempt)

	// A released attempt (shutdown) is claimable at once and not counted.
	second := claimOne(t, l, req("j9", "k2", "p", time.Minute))
	l2 := idempotency.Lease{Kind: "charge", Key: "k2", Fence: second.Fence}
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: l2, State: idempotency.StateRetrying, Release: true}))
	again := claimOne(t, l, req("j9", "k2", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, again.Status)
	require.Equal(t, 1, again.Attempts)
}

func TestDeadAndReap(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	c := claimOne(t, l, req("j1", "k", "p", time.Minute))
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k", Fence: c.Fence},
		State: idempotency.StateDead, Reason: "permanent_error", Error: "400 Bad Request"}))
	dup := claimOne(t, l, req("j1", "k", "p", time.Minute))
	require.Equal(t, idempotency.AlreadyDead, dup.Status)
	require.Equal(t, "permanent_error", dup.Reason)

	n, err := l.Reap(ctx, time.Hour, 100)
	require.NoError(t, err)
	require.Zero(t, n, "nothing is reaped before its retention")
	time.Sleep(10 * time.Millisecond)
	n, err = l.Reap(ctx, time.Millisecond, 100)
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	_, err = l.Status(ctx, "j1")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}

func TestTruncate(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdefghij", 6, "abc…"},
		{"ééééé", 6, "é…"},
	} {
		require.Equal(t, tc.want, idempotency.Truncate(tc.in, tc.n), "Truncate(%q, %d)", tc.in, tc.n)
		require.LessOrEqual(t, len(idempotency.Truncate(tc.in, tc.n)), max(tc.n, len(tc.want)))
	}
}

func TestStatusBeforeMigrationIsNotFound(t *testing.T) {
	t.Parallel()
	l, err := idempotency.New(idempotency.Config{Pool: leveetest.Pool(t), Schema: leveetest.Namespace(t)})
	require.NoError(t, err)
	_, err = l.Status(context.Background(), "j1")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}

// MarkDead tells a poison from its bystanders by MarkSolo: a job whose message never ran
// alone is published again (StrandedRequeue, counted once per message) up to MaxRequeues
// times, then dead; a job whose message ran alone and still ran out of deliveries is dead at
// once. A mark counts for its own message only, and a replay (Revive) starts afresh. Force
// (an operator's capture) skips the second chance.
func TestMarkDeadGivesBystandersAnotherChance(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	rec := func(id string) idempotency.Record {
		return idempotency.Record{JobID: id, Kind: "charge", Key: id, Reason: "max_deliveries", Error: "delivered 3 times"}
	}
	status := func(id string) idempotency.State {
		st, err := l.Status(ctx, id)
		if err != nil {
			return ""
		}
		return st.State
	}
	markDead := func(id string, seq uint64) idempotency.StrandedAction {
		t.Helper()
		action, err := l.MarkDead(ctx, rec(id), seq, false)
		require.NoError(t, err)
		return action
	}

	// Never claimed, never alone (a bystander that died before its claim, every time). The
	// same advisory settled twice (its worker died before the ack) counts once.
	require.Equal(t, idempotency.StrandedRequeue, markDead("bystander", 10))
	require.Equal(t, idempotency.StrandedRequeue, markDead("bystander", 10), "the same message again")
	require.Equal(t, idempotency.StrandedRequeue, markDead("bystander", 11), "its second copy")
	require.Empty(t, status("bystander"), "a requeued job is not recorded dead")
	require.Equal(t, idempotency.StrandedDead, markDead("bystander", 12), "after MaxRequeues second chances the job is dead")
	require.Equal(t, idempotency.StateDead, status("bystander"))

	// Claimed, its lease lapsed (its worker died), then run alone: dead at once; but a mark
	// of an earlier message of the same job does not count for a later one.
	require.Equal(t, idempotency.Claimed, claimOne(t, l, req("poison", "poison", "p", 100*time.Millisecond)).Status)
	require.NoError(t, l.MarkSolo(ctx, "poison", "charge", 20))
	time.Sleep(200 * time.Millisecond) // the lease lapses on the database clock
	require.Equal(t, idempotency.StrandedRequeue, markDead("poison", 21), "marked alone on another message")

	// A mark taken back (its run alone was cancelled when its worker lost Postgres) condemns
	// nothing; marked again, it does.
	require.NoError(t, l.UnmarkSolo(ctx, "poison", 20))
	require.Equal(t, idempotency.StrandedRequeue, markDead("poison", 20), "its mark was taken back")
	require.NoError(t, l.MarkSolo(ctx, "poison", "charge", 20))
	require.NoError(t, l.UnmarkSolo(ctx, "poison", 19), "another message's unmark changes nothing")
	require.Equal(t, idempotency.StrandedDead, markDead("poison", 20))
	require.Equal(t, idempotency.StateDead, status("poison"))

	// A replay starts afresh: its requeues and mark are forgotten.
	_, _, err := l.Revive(ctx, "charge", "poison", "poison", nil, "ops")
	require.NoError(t, err)
	require.Equal(t, idempotency.Claimed, claimOne(t, l, req("poison", "poison", "p", 100*time.Millisecond)).Status)
	time.Sleep(200 * time.Millisecond) // its worker died again
	require.Equal(t, idempotency.StrandedRequeue, markDead("poison", 20), "the mark went with the replay")

	// An operator's capture does not wait for a last chance.
	action, err := l.MarkDead(ctx, rec("orphan"), 30, true)
	require.NoError(t, err)
	require.Equal(t, idempotency.StrandedDead, action)

	// Last chances are reaped with the rest.
	n, err := l.Reap(ctx, 0, 100)
	require.NoError(t, err)
	require.Positive(t, n)
}

// A pool set up for a connection pooler (statement and description caches off, pgx's exec
// mode) runs every hot statement of the ledger.
func TestLedgerWorksWithoutStatementCaches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	l := leveetest.LedgerOn(t, ownPool(t, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.StatementCacheCapacity, cfg.ConnConfig.DescriptionCacheCapacity = 0, 0
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}), leveetest.Namespace(t))

	res := claimOne(t, l, req("j1", "k1", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, res.Status)
	lease := idempotency.Lease{Kind: "charge", Key: "k1", Fence: res.Fence}
	alive, err := l.Heartbeat(ctx, []idempotency.Lease{lease}, time.Minute)
	require.NoError(t, err)
	require.Equal(t, idempotency.LeaseExtended, alive[0])
	require.True(t, finishOne(t, l, idempotency.Outcome{Lease: lease, State: idempotency.StateSucceeded, Result: []byte(`{"ok":1}`), Attempt: idempotency.AttemptSucceeded}))
	st, err := l.Status(ctx, "j1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateSucceeded, st.State)
	require.JSONEq(t, `{"ok":1}`, string(st.Result))
	require.Equal(t, idempotency.AlreadySucceeded, claimOne(t, l, req("j2", "k1", "p", time.Minute)).Status)
	action, err := l.MarkDead(ctx, idempotency.Record{JobID: "j3", Kind: "charge", Key: "k3", Reason: "max_deliveries"}, 7, false)
	require.NoError(t, err)
	require.Equal(t, idempotency.StrandedRequeue, action)
}

// A ledger that was small when its statements first ran still looks keys up by index once it
// has grown, because KeepPlansFresh analyzes it: no claim, heartbeat or finish then scans the
// whole table. (A prepared statement's generic plan, fixed while the table was young, did
// until autovacuum came by: 3 cycles read 270,105 rows of a 30,000-key table.)
func TestHotStatementsDoNotScanAGrownLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// One connection, so that its plans are the ones reused.
	pool := ownPool(t, func(cfg *pgxpool.Config) { cfg.MaxConns = 1 })
	ns := leveetest.Namespace(t)
	l := leveetest.LedgerOn(t, pool, ns)

	cycle := func(i int) {
		id := fmt.Sprintf("j%d", i)
		res := claimOne(t, l, req(id, id, "p", time.Minute))
		require.Equal(t, idempotency.Claimed, res.Status)
		lease := idempotency.Lease{Kind: "charge", Key: id, Fence: res.Fence}
		_, err := l.Heartbeat(ctx, []idempotency.Lease{lease}, time.Minute)
		require.NoError(t, err)
		require.True(t, finishOne(t, l, idempotency.Outcome{Lease: lease, State: idempotency.StateSucceeded, Result: []byte(`1`)}))
	}
	for i := range 10 { // while the ledger is small
		cycle(i)
	}
	analyzed, _, err := l.KeepPlansFresh(ctx)
	require.NoError(t, err)
	require.False(t, analyzed, "a ledger of 10 keys has nothing to gain")
	_, err = pool.Exec(ctx, `INSERT INTO `+ns+`.keys (kind, key, job_id, payload_hash, state, attempts)
		SELECT 'charge', 'bulk' || g, 'bulk' || g, '\x00', 'succeeded', 1 FROM generate_series(1, 30000) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "SELECT pg_stat_force_next_flush()") // the insert's row counts, now
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		analyzed, _, err = l.KeepPlansFresh(ctx)
		require.NoError(t, err)
		return analyzed
	}, 10*time.Second, 50*time.Millisecond, "the grown ledger is analyzed")
	analyzed, _, err = l.KeepPlansFresh(ctx)
	require.NoError(t, err)
	require.False(t, analyzed, "once counted, it is not analyzed again until it doubles")

	seqRead := func() int64 {
		var n int64
		_, err := pool.Exec(ctx, "SELECT pg_stat_force_next_flush()")
		require.NoError(t, err)
		require.NoError(t, pool.QueryRow(ctx, `SELECT pg_stat_clear_snapshot() IS NULL,
			COALESCE((SELECT seq_tup_read FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'keys'), 0)`, ns).Scan(new(bool), &n))
		return n
	}
	before := seqRead()
	for i := 10; i < 13; i++ {
		cycle(i)
	}
	require.Less(t, seqRead()-before, int64(1000), "rows read by sequential scans of the ledger for 3 claims, heartbeats and finishes")
}

// A role that does not own the ledger cannot ANALYZE it: KeepPlansFresh says so once (the
// worker then stops trying) rather than having Postgres skip it with a warning every time.
func TestKeepPlansFreshNeedsTheTableOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := leveetest.Namespace(t)
	leveetest.Ledger(t, ns) // migrated by the owner
	admin := leveetest.Pool(t)
	role := ns + "_reader"
	_, err := admin.Exec(ctx, "CREATE ROLE "+role+" LOGIN")
	require.NoError(t, err)
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP OWNED BY "+role)
		_, _ = admin.Exec(context.Background(), "DROP ROLE "+role)
	})
	_, err = admin.Exec(ctx, "GRANT USAGE ON SCHEMA "+ns+" TO "+role)
	require.NoError(t, err)
	pool := ownPool(t, func(cfg *pgxpool.Config) { cfg.ConnConfig.User = role })
	l, err := idempotency.New(idempotency.Config{Pool: pool, Schema: ns})
	require.NoError(t, err)
	_, _, err = l.KeepPlansFresh(ctx)
	require.ErrorContains(t, err, "only the owner")
}

// ownPool is a pool of the test's own, to the test database, with the settings mutate makes.
func ownPool(t *testing.T, mutate func(*pgxpool.Config)) *pgxpool.Pool {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	mutate(cfg)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// Once Postgres has counted a large keys table, its plans stay index plans as it grows:
// KeepPlansFresh reports it mature, and the workers stop checking.
func TestKeepPlansFreshReportsAMatureLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := leveetest.Namespace(t)
	l := leveetest.Ledger(t, ns)
	_, mature, err := l.KeepPlansFresh(ctx)
	require.NoError(t, err)
	require.False(t, mature, "a new ledger is young")
	pool := leveetest.Pool(t)
	_, err = pool.Exec(ctx, `INSERT INTO `+ns+`.keys (kind, key, job_id, payload_hash, state, attempts)
		SELECT 'charge', 'bulk' || g, 'bulk' || g, '\x00', 'succeeded', 1 FROM generate_series(1, 200000) g`)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, "ANALYZE "+ns+".keys")
	require.NoError(t, err)
	analyzed, mature, err := l.KeepPlansFresh(ctx)
	require.NoError(t, err)
	require.False(t, analyzed)
	require.True(t, mature)
}

// Warm opens the connections asked for (no more than the pool holds) and prepares the hot
// statements on each, so that a worker's first jobs wait for neither.
func TestWarmOpensAndPreparesConnections(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	cfg.MaxConns = 5
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	l := leveetest.LedgerOn(t, pool, leveetest.Namespace(t))
	pool.Reset() // the migration's connections gone: the pool starts cold, as a worker's does
	require.Zero(t, pool.Stat().TotalConns())

	require.NoError(t, l.Warm(ctx, 3))
	require.EqualValues(t, 3, pool.Stat().TotalConns())
	require.EqualValues(t, 3, pool.Stat().IdleConns(), "released after")
	for _, c := range pool.AcquireAllIdle(ctx) {
		var prepared int
		require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM pg_prepared_statements`).Scan(&prepared))
		require.GreaterOrEqual(t, prepared, 3, "claim, finish and heartbeat are prepared on every connection")
		c.Release()
	}
	require.NoError(t, l.Warm(ctx, 50))
	require.EqualValues(t, 5, pool.Stat().TotalConns(), "never more than the pool's size")

	// A pool shared with the application: what it holds is not waited for.
	app, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer app.Release()
	start := time.Now()
	require.NoError(t, l.Warm(ctx, 50))
	require.Less(t, time.Since(start), 400*time.Millisecond, "no wait for the connection the application holds")
	require.EqualValues(t, 1, pool.Stat().AcquiredConns(), "the others released after")
}
