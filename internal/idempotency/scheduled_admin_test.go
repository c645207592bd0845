package idempotency_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/leveetype"
)

// A ledger migrated before scheduled jobs existed (no scheduled table) still lists, finds and
// counts its jobs; it has no scheduled job to list or cancel.
func TestOperatorReadsWithoutScheduledTable(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	l := leveetest.Ledger(t, ns)
	ctx := context.Background()
	res := claimOne(t, l, req("job-1", "k1", "p", time.Minute))
	require.Equal(t, idempotency.Claimed, res.Status)
	_, err := leveetest.Pool(t).Exec(ctx, "DROP TABLE "+pgx.Identifier{ns, "scheduled"}.Sanitize())
	require.NoError(t, err)

	jobs, err := l.ListJobs(ctx, idempotency.JobQuery{Limit: 10})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	require.Equal(t, "job-1", jobs[0].ID)
	require.Nil(t, jobs[0].RunAt)
	jobs, err = l.ListJobs(ctx, idempotency.JobQuery{State: leveetype.StateScheduled, Limit: 10})
	require.NoError(t, err)
	require.Empty(t, jobs)
	jobs, err = l.FindByKey(ctx, "k1")
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	agg, err := l.Aggregate(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, agg.Counts[idempotency.StateRunning])
	require.Zero(t, agg.Counts[leveetype.StateScheduled])
	_, _, err = l.CancelScheduledJob(ctx, "job-2", "cancelled by test")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}

// CancelScheduledJob takes the row out of the schedule and writes the job's key dead with
// reason cancelled, in one transaction; the job then reads as dead, and no dispatcher finds it.
func TestCancelScheduledJob(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	_, err := l.Schedule(ctx, []idempotency.ScheduledJob{{ID: "s-1", Kind: "k", Key: "key-1", Payload: []byte(`{"a":1}`),
		RunAt: time.Now().Add(time.Hour), Origin: idempotency.OriginDelay}})
	require.NoError(t, err)

	j, c, err := l.CancelScheduledJob(ctx, "s-1", "cancelled by ada")
	require.NoError(t, err)
	require.Equal(t, "key-1", j.Key)
	require.JSONEq(t, `{"a":1}`, string(j.Payload))
	require.Equal(t, "cancelled by ada", c.LastError)
	st, err := l.Status(ctx, "s-1")
	require.NoError(t, err)
	require.Equal(t, idempotency.StateDead, st.State)
	require.Equal(t, idempotency.ReasonCancelled, st.Reason)
	_, err = l.ScheduledStatus(ctx, "s-1")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
	_, _, err = l.CancelScheduledJob(ctx, "s-1", "again")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}
