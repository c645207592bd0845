package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// Design rule 31: every statement that locks rows of keys locks them in (kind, key) order,
// so batch statements over the same keys in opposite orders never deadlock. Each round
// claims 64 keys, then heartbeats them in ascending order while it finishes them in
// descending order and claims them again in descending order, all at once; the ledger's own
// retries are off, so a deadlock would show as an error. (Before the order was enforced, 40
// rounds met a deadlock about 18 times.)
func TestBatchStatementsOverTheSameKeysNeverDeadlock(t *testing.T) {
	t.Parallel()
	l := leveetest.LedgerOn(t, ownPool(t, func(cfg *pgxpool.Config) { cfg.MaxConns = 4 }), leveetest.Namespace(t))
	idempotency.NoLockRetries(l)
	ctx := context.Background()
	const n, rounds = 64, 40
	var errs []error
	for r := range rounds {
		reqs := make([]idempotency.ClaimRequest, n)
		for i := range reqs {
			reqs[i] = req(fmt.Sprintf("r%02d-j%02d", r, i), fmt.Sprintf("r%02d-k%02d", r, i), "p", time.Minute)
		}
		claims, err := l.Claim(ctx, reqs)
		require.NoError(t, err)
		leases := make([]idempotency.Lease, n)
		outs := make([]idempotency.Outcome, n)
		for i, c := range claims {
			require.Equal(t, idempotency.Claimed, c.Status)
			leases[i] = idempotency.Lease{Kind: "charge", Key: reqs[i].Key, Fence: c.Fence}
			outs[n-1-i] = idempotency.Outcome{Lease: leases[i], State: idempotency.StateRetrying,
				Error: "503", Attempt: idempotency.AttemptFailed, Worker: "w"}
		}
		again := slices.Clone(reqs)
		slices.Reverse(again)

		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			start = make(chan struct{})
		)
		run := func(what string, f func() error) {
			wg.Go(func() {
				<-start
				if err := f(); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("round %d: %s: %w", r, what, err))
					mu.Unlock()
				}
			})
		}
		run("heartbeat", func() error { _, err := l.Heartbeat(ctx, leases, time.Minute); return err })
		run("finish", func() error { _, err := l.Finish(ctx, outs); return err })
		run("claim", func() error { _, err := l.Claim(ctx, again); return err })
		close(start)
		wg.Wait()
	}
	require.Empty(t, errs)
}

// planNode is a node of EXPLAIN (FORMAT JSON).
type planNode struct {
	NodeType    string     `json:"Node Type"`
	SubplanName string     `json:"Subplan Name"`
	SortKey     []string   `json:"Sort Key"`
	Plans       []planNode `json:"Plans"`
}

// find returns the first node, depth first, for which match holds.
func (n planNode) find(match func(planNode) bool) (planNode, bool) {
	if match(n) {
		return n, true
	}
	for _, c := range n.Plans {
		if f, ok := c.find(match); ok {
			return f, true
		}
	}
	return planNode{}, false
}

// sortsByKey reports whether n sorts by (kind, key) in byte order.
func sortsByKey(n planNode) bool {
	return n.NodeType == "Sort" && len(n.SortKey) == 2 &&
		sortKeyColumn("kind").MatchString(n.SortKey[0]) && sortKeyColumn("key").MatchString(n.SortKey[1])
}

// sortKeyColumn matches a sort key on the column col of some relation in byte order: k.kind
// COLLATE "C", or the relabelling Postgres shows when the column itself is not in the node's
// output, ((k.kind)::text) COLLATE "C" (the same order); not an expression over it.
func sortKeyColumn(col string) *regexp.Regexp {
	return regexp.MustCompile(`^\(*[a-z_]+[0-9]*\.` + col + `\)*(::text\)*)? COLLATE "C"$`)
}

// The plans behind design rule 31: the heartbeat and the finish lock their rows in a CTE
// whose LockRows sits above a Sort on (kind, key), the claim's insert reads its rows through
// such a Sort, and the reaper locks what it deletes with SKIP LOCKED.
func TestLockingStatementsLockInKeyOrder(t *testing.T) {
	t.Parallel()
	l := setup(t)
	pool := leveetest.Pool(t)
	ctx := context.Background()
	st := idempotency.Statements(l)
	explain := func(sql string, args ...any) planNode {
		t.Helper()
		var out []struct{ Plan planNode }
		require.NoError(t, pool.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+sql, args...).Scan(&out))
		return out[0].Plan
	}
	kinds, keys, fences := []string{"charge", "charge"}, []string{"b", "a"}, []int64{1, 1}
	nulls := []*string{nil, nil}
	for name, plan := range map[string]planNode{
		"heartbeat": explain(st["heartbeat"], kinds, keys, fences, 30.0),
		"finish": explain(st["finish"], kinds, keys, fences, []string{"succeeded", "dead"}, nulls, nulls, nulls,
			[]float64{0, 0}, []bool{false, false}, nulls, nulls, nulls),
	} {
		lock, ok := plan.find(func(n planNode) bool { return n.SubplanName == "CTE locked" })
		require.True(t, ok, "%s locks its rows in a CTE", name)
		require.Equal(t, "LockRows", lock.NodeType, name)
		require.Len(t, lock.Plans, 1, name)
		require.True(t, sortsByKey(lock.Plans[0]), "%s: LockRows sits above a Sort on (kind, key): %+v", name, lock.Plans[0])
	}

	claim := explain(st["claim"], []string{"j2", "j1"}, kinds, keys, [][]byte{{1}, {1}}, []time.Time{time.Now(), time.Now()},
		[]float64{30, 30}, nulls)
	insert, ok := claim.find(func(n planNode) bool { return n.NodeType == "ModifyTable" })
	require.True(t, ok)
	_, ok = insert.find(sortsByKey)
	require.True(t, ok, "the claim's insert takes its rows sorted on (kind, key)")

	reap := explain(st["reapKeys"], 10.0, 100)
	_, ok = reap.find(func(n planNode) bool { return n.NodeType == "LockRows" })
	require.True(t, ok, "the reaper locks the rows it deletes")
	require.Contains(t, st["reapKeys"], "SKIP LOCKED", "and never waits for a row another statement holds")
}

// waitForLockWait waits until a statement on schema ns waits for a row lock.
func waitForLockWait(t *testing.T, pool *pgxpool.Pool, ns string) {
	t.Helper()
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, ns).Scan(&n))
		return n > 0
	}, 10*time.Second, 5*time.Millisecond)
}

// Design rule 31: a batch statement that still meets a deadlock (here a finish, with an
// operator's transaction that locks two keys in the other order) is tried again, and
// succeeds. (Heartbeats never wait for a row lock: they skip a held row.)
func TestBatchStatementRetriesADeadlock(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := leveetest.Namespace(t)
	pool := leveetest.Pool(t)
	l := leveetest.LedgerOn(t, pool, ns)

	// The other transaction takes b, waits until the finish holds a and waits for b, then
	// asks for a: a deadlock, which the finish's session detects first (its deadlock_timeout
	// is the server's 1 s, the other's a minute) and so is the one aborted.
	deadlock := func(l *idempotency.Ledger, a, b string) error {
		var outs []idempotency.Outcome
		for _, k := range []string{a, b} {
			c := claimOne(t, l, req(k, k, "p", time.Minute))
			outs = append(outs, idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: k, Fence: c.Fence},
				State: idempotency.StateRetrying, Release: true})
		}
		other, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = other.Rollback(ctx) }()
		_, err = other.Exec(ctx, `SET LOCAL deadlock_timeout = '1min'`)
		require.NoError(t, err)
		lock := `SELECT 1 FROM ` + ns + `.keys WHERE kind = 'charge' AND key = $1 FOR UPDATE`
		_, err = other.Exec(ctx, lock, b)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			applied, err := l.Finish(ctx, outs)
			if err == nil && (!applied[0] || !applied[1]) {
				err = fmt.Errorf("not applied: %v", applied)
			}
			done <- err
		}()
		waitForLockWait(t, pool, ns)
		_, err = other.Exec(ctx, lock, a) // granted once the finish is aborted
		require.NoError(t, err)
		require.NoError(t, other.Commit(ctx))
		return <-done
	}
	require.NoError(t, deadlock(l, "a", "b"), "the finish was tried again")

	once, err := idempotency.New(idempotency.Config{Pool: pool, Schema: ns})
	require.NoError(t, err)
	idempotency.NoLockRetries(once)
	err = deadlock(once, "c", "d")
	require.Error(t, err, "without retries the deadlock shows")
	require.True(t, idempotency.Transient(err), "%v", err)
	require.ErrorContains(t, err, "40P01")
}

// Design rule 31 on a database whose default isolation is REPEATABLE READ: a finish that
// waited for another transaction's update of its key fails with a serialization failure, and
// is tried again with a new snapshot.
func TestBatchStatementRetriesASerializationFailure(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := leveetest.Namespace(t)
	pool := ownPool(t, func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "repeatable read"
	})
	l := leveetest.LedgerOn(t, pool, ns)
	once, err := idempotency.New(idempotency.Config{Pool: pool, Schema: ns})
	require.NoError(t, err)
	idempotency.NoLockRetries(once)

	finish := func(l *idempotency.Ledger, key string) error {
		c := claimOne(t, l, req(key, key, "p", time.Minute))
		other, err := pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = other.Rollback(ctx) }()
		_, err = other.Exec(ctx, `UPDATE `+ns+`.keys SET updated_at = now() WHERE kind = 'charge' AND key = $1`, key)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() {
			applied, err := l.Finish(ctx, []idempotency.Outcome{{Lease: idempotency.Lease{Kind: "charge", Key: key, Fence: c.Fence},
				State: idempotency.StateSucceeded, Result: []byte(`1`)}})
			if err == nil && !applied[0] {
				err = errors.New("not applied")
			}
			done <- err
		}()
		waitForLockWait(t, pool, ns)
		require.NoError(t, other.Commit(ctx))
		return <-done
	}
	require.NoError(t, finish(l, "k1"), "the finish was tried again")
	err = finish(once, "k2")
	require.ErrorContains(t, err, "40001", "without retries the serialization failure shows")
	require.True(t, idempotency.Transient(err))
}
