package worker

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// failover answers the first Finish from a session on the old primary, now read-only (as a
// pooled connection to a demoted primary, or one pgbouncer/HAProxy still routes to a standby,
// answers during a failover), and every later one from the new primary.
type failover struct {
	old, cur *idempotency.Ledger
	calls    atomic.Int32
}

func (f *failover) Finish(ctx context.Context, outs []idempotency.Outcome) ([]bool, error) {
	if f.calls.Add(1) == 1 {
		return f.old.Finish(ctx, outs)
	}
	return f.cur.Finish(ctx, outs)
}

// A refusal that says nothing about the row (25006 read-only during a failover, 42501 during a
// GRANT change) is retried, never replaced by a substitute: a handler that succeeded must not
// be recorded dead because the next statement landed on the new primary (found by review).
// Real Postgres answers both statements.
func TestCommitterRetriesASuccessRefusedDuringAFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ns := leveetest.Namespace(t)
	cur := leveetest.Ledger(t, ns)

	u, err := url.Parse(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	q := u.Query()
	q.Set("default_transaction_read_only", "on")
	u.RawQuery = q.Encode()
	roCfg, err := pgxpool.ParseConfig(u.String())
	require.NoError(t, err)
	roPool, err := pgxpool.NewWithConfig(ctx, roCfg)
	require.NoError(t, err)
	t.Cleanup(roPool.Close)
	old, err := idempotency.New(idempotency.Config{Pool: roPool, Schema: ns})
	require.NoError(t, err)

	hash := sha256.Sum256([]byte(`{}`))
	res, err := cur.Claim(ctx, []idempotency.ClaimRequest{{JobID: "job-1", Kind: "charge", Key: "k1",
		PayloadHash: hash[:], EnqueuedAt: time.Now(), Lease: time.Minute}})
	require.NoError(t, err)
	require.Equal(t, idempotency.Claimed, res[0].Status)

	c := newCommitter(&failover{old: old, cur: cur}, nil, 64)
	out := idempotency.Outcome{Lease: idempotency.Lease{Kind: "charge", Key: "k1", Fence: res[0].Fence},
		State: idempotency.StateSucceeded, Result: []byte(`{"charged":true}`), Attempt: idempotency.AttemptSucceeded, Worker: "w1"}
	got := c.write(ctx, nil, []idempotency.Outcome{out})[0]

	st, err := cur.Status(ctx, "job-1")
	require.NoError(t, err)
	t.Logf("commit answer: err=%v applied=%v substituted=%v; ledger: state=%s reason=%q error=%q",
		got.err, got.applied, got.substituted, st.State, st.Reason, st.LastError)
	require.False(t, got.substituted, "a read-only session during a failover is not the row's fault: the success must be retried, not replaced")
	require.NotEqual(t, idempotency.StateDead, st.State, "the handler succeeded; its job is now dead as %s", st.Reason)
}

// A connection that could not be opened (refused at authentication during a credential
// rotation, a database missing during a failover) refused no row: it is transient.
func TestCommitterTakesAFailedDialAsTransient(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	u, err := url.Parse(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	u.Path = "/levee_no_such_database" // as a dial during a credential rotation fails with 28P01
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(ctx, "SELECT 1")
	require.Error(t, err)
	t.Logf("dial error: %v (transient: %v)", err, idempotency.Transient(err))
	require.False(t, refused(err), "a connection that could not be opened refused no row")
}

// Once closed, the committer drains what is queued in batches, not one statement (and one
// commitTimeout) per outcome: a shutdown during a silent outage must not cost minutes (found
// by review). Go's select picks the stop branch about half the time when both are ready, so
// it is tried 20 times.
func TestCommitterDrainsInBatchesAtClose(t *testing.T) {
	t.Parallel()
	worst := 0
	for range 20 {
		var calls atomic.Int32
		var deadlines []time.Duration
		fl := &fakeLedger{}
		fl.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) {
			calls.Add(1)
			return nil, errors.New("timeout: context deadline exceeded")
		}
		c := newCommitter(&deadlineLedger{fakeLedger: fl, seen: &deadlines}, nil, 64)
		for i := range 5 {
			c.reqs <- commitReq{out: idempotency.Outcome{Lease: idempotency.Lease{Kind: "k", Key: fmt.Sprint(i), Fence: 1}}, res: make(chan commitRes, 1)}
		}
		close(c.stop) // close() was called while those waited behind a stuck flush
		c.run()
		worst = max(worst, int(calls.Load()))
		for _, d := range deadlines {
			require.InDelta(t, commitTimeout.Seconds(), d.Seconds(), 1, "each drained statement gets a full commitTimeout")
		}
	}
	require.Equal(t, 1, worst, "5 queued outcomes drained in %d statements, each allowed %s", worst, commitTimeout)
}

type deadlineLedger struct {
	*fakeLedger
	seen *[]time.Duration
}

func (l *deadlineLedger) Finish(ctx context.Context, outs []idempotency.Outcome) ([]bool, error) {
	if d, ok := ctx.Deadline(); ok {
		*l.seen = append(*l.seen, time.Until(d))
	}
	return l.fakeLedger.Finish(ctx, outs)
}
