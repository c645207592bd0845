package levee_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// failTimes is a handler that fails the first n attempts of every job with "boom <attempt>",
// then succeeds.
func failTimes(n int) levee.Handler {
	return levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		if job.Attempt <= n {
			return nil, fmt.Errorf("boom %d", job.Attempt)
		}
		return map[string]int{"attempt": job.Attempt}, nil
	})
}

var quickRetry = levee.Policy{Backoff: levee.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}}

func TestAttemptsAndFindJobs(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		b.startWorker(t, "flaky", failTimes(2), quickRetry)

		first, err := b.client.Publish(ctx, "flaky", map[string]int{"n": 1}, levee.WithKey("order-7"))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)

		atts, err := b.client.Attempts(ctx, first.ID)
		require.NoError(t, err)
		require.Len(t, atts, 3, "%+v", atts)
		for i, a := range atts {
			require.Equal(t, i+1, a.N)
			require.NotEmpty(t, a.Worker)
			require.NotNil(t, a.FinishedAt)
			require.False(t, a.FinishedAt.Before(a.StartedAt), "attempt %d finished before it started", a.N)
		}
		require.Equal(t, "failed", atts[0].Outcome)
		require.Equal(t, "boom 1", atts[0].Error)
		require.Equal(t, "boom 2", atts[1].Error)
		require.Equal(t, "succeeded", atts[2].Outcome)
		require.Empty(t, atts[2].Error)

		// A second job with the same key is a duplicate: the key finds both, newest first.
		second, err := b.client.Publish(ctx, "flaky", map[string]int{"n": 1}, levee.WithKey("order-7"))
		require.NoError(t, err)
		require.Equal(t, first.ID, b.waitFinal(t, second.ID, 20*time.Second).DuplicateOf)

		found, err := b.client.FindJobs(ctx, "order-7")
		require.NoError(t, err)
		require.Len(t, found, 2)
		require.Equal(t, second.ID, found[0].ID)
		require.Equal(t, first.ID, found[1].ID)
		require.Equal(t, levee.StateSucceeded, found[1].State)

		byID, err := b.client.FindJobs(ctx, first.ID)
		require.NoError(t, err)
		require.Len(t, byID, 1)
		require.Equal(t, "order-7", byID[0].Key)

		dupAtts, err := b.client.Attempts(ctx, second.ID)
		require.NoError(t, err)
		require.Empty(t, dupAtts, "a duplicate never ran")

		_, err = b.client.FindJobs(ctx, "no-such-thing")
		require.ErrorIs(t, err, levee.ErrNotFound)
		_, err = b.client.Attempts(ctx, "no-such-job")
		require.ErrorIs(t, err, levee.ErrNotFound)
	})
}

// TestJobsPagingConcurrentInserts pages through the ledger while keys are claimed: every job
// present before paging began comes back exactly once, and no job twice.
func TestJobsPagingConcurrentInserts(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	ledger, err := idempotency.New(idempotency.Config{Pool: leveetest.Pool(t), Schema: b.ns})
	require.NoError(t, err)
	base := time.Now().Add(-time.Hour).Truncate(time.Second) // Postgres keeps microseconds
	claim := func(prefix string, from, n int) {
		reqs := make([]idempotency.ClaimRequest, n)
		for i := range reqs {
			id := fmt.Sprintf("%s-%04d", prefix, from+i)
			// Several jobs share each enqueued time, so the id breaks ties.
			reqs[i] = idempotency.ClaimRequest{JobID: id, Kind: "page", Key: id, PayloadHash: []byte{1},
				EnqueuedAt: base.Add(time.Duration((from+i)/3) * time.Second), Lease: time.Minute}
		}
		_, err := ledger.Claim(ctx, reqs)
		require.NoError(t, err)
	}
	claim("old", 0, 230)
	// One unowned record among them, as a duplicate would leave.
	require.NoError(t, ledger.AddRecords(ctx, []idempotency.Record{{JobID: "dup-1", Kind: "page", Key: "old-0001",
		State: idempotency.StateSucceeded, DuplicateOf: "old-0001", EnqueuedAt: base.Add(30 * time.Second)}}))

	stop := make(chan struct{})
	var inserts sync.WaitGroup
	inserts.Go(func() {
		for i := 0; ; i += 5 {
			select {
			case <-stop:
				return
			default:
			}
			claim("new", i, 5)
		}
	})

	seen := map[string]int{}
	cursor, pages := "", 0
	for {
		page, err := b.client.Jobs(ctx, levee.JobFilter{Kind: "page", Cursor: cursor, Limit: 40})
		require.NoError(t, err)
		pages++
		for _, j := range page.Jobs {
			seen[j.ID]++
		}
		if page.Next == "" {
			break
		}
		cursor = page.Next
	}
	close(stop)
	inserts.Wait()
	require.GreaterOrEqual(t, pages, 6)
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s listed %d times", id, n)
	}
	for i := range 230 {
		require.Contains(t, seen, fmt.Sprintf("old-%04d", i))
	}
	require.Contains(t, seen, "dup-1")

	// Filters: state, and a time window on the enqueued time.
	page, err := b.client.Jobs(ctx, levee.JobFilter{State: levee.StateRunning, Kind: "page",
		Since: base, Until: base.Add(10 * time.Second), Limit: 500})
	require.NoError(t, err)
	require.Empty(t, page.Next)
	old := 0
	for _, j := range page.Jobs {
		require.True(t, !j.EnqueuedAt.Before(base) && j.EnqueuedAt.Before(base.Add(10*time.Second)), "%s enqueued at %s", j.ID, j.EnqueuedAt)
		if strings.HasPrefix(j.ID, "old-") {
			old++
		}
	}
	require.Equal(t, 30, old, "old ids 0-29 were enqueued in the first 10 seconds")

	_, err = b.client.Jobs(ctx, levee.JobFilter{State: levee.StateQueued})
	require.ErrorIs(t, err, levee.ErrBadFilter)
	_, err = b.client.Jobs(ctx, levee.JobFilter{Cursor: "garbage!"})
	require.ErrorIs(t, err, levee.ErrBadFilter)
	_, err = b.client.Jobs(ctx, levee.JobFilter{Limit: 501})
	require.ErrorIs(t, err, levee.ErrBadFilter)
}

// TestOverviewSingleflight: ten concurrent callers share one computation, and the result is
// cached for maxAge.
func TestOverviewSingleflight(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	b.startWorker(t, "ov", failTimes(1), quickRetry)
	res, err := b.client.Publish(ctx, "ov", nil)
	require.NoError(t, err)
	b.waitFinal(t, res.ID, 20*time.Second)

	var (
		wg    sync.WaitGroup
		gens  sync.Map
		calls atomic.Int32
	)
	for range 10 {
		wg.Go(func() {
			ov, err := b.client.Overview(ctx, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			calls.Add(1)
			gens.Store(ov.Generation, ov)
		})
	}
	wg.Wait()
	require.EqualValues(t, 10, calls.Load())
	n := 0
	var ov *levee.Overview
	gens.Range(func(k, v any) bool {
		n++
		ov = v.(*levee.Overview)
		return true
	})
	require.Equal(t, 1, n, "ten concurrent callers share one computation")
	require.EqualValues(t, 1, ov.Generation)

	again, err := b.client.Overview(ctx, time.Minute)
	require.NoError(t, err)
	require.Same(t, ov, again, "cached for maxAge")
	fresh, err := b.client.Overview(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, fresh.Generation, "maxAge 0 computes again")

	require.EqualValues(t, 1, ov.Counts[levee.StateSucceeded])
	require.Len(t, ov.Buckets, 60)
	var kind *levee.KindInfo
	for i := range ov.Kinds {
		if ov.Kinds[i].Kind == "ov" {
			kind = &ov.Kinds[i]
		}
	}
	require.NotNil(t, kind, "%+v", ov.Kinds)
	require.Equal(t, 1, kind.Succeeded1h)
	require.Equal(t, 1, kind.Failed1h)
	require.Equal(t, 1, kind.Workers)
	require.Equal(t, "closed", kind.Breaker)
	require.Positive(t, kind.RateUse)
	total := 0
	for _, bk := range ov.Buckets {
		total += bk.Succeeded + bk.Failed
	}
	require.Equal(t, 2, total)
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	require.NoError(t, b.client.Audit(ctx, "ada", "note", "x", "first"))
	require.NoError(t, b.client.PauseKind(ctx, "mail", "grace"))
	require.NoError(t, b.client.ResumeKind(ctx, "mail", "grace"))
	log, err := b.client.AuditLog(ctx, 2)
	require.NoError(t, err)
	require.Len(t, log, 2)
	require.Equal(t, levee.AuditEntry{At: log[0].At, Actor: "grace", Action: "resume", Target: "mail"}, log[0])
	require.Equal(t, "pause", log[1].Action)
	require.WithinDuration(t, time.Now(), log[0].At, time.Minute)
}
