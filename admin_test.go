package levee_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/leveetype"
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

		atts, err := b.ops.JobAttempts(ctx, first.ID)
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

		found, err := b.ops.JobFind(ctx, "order-7")
		require.NoError(t, err)
		require.Len(t, found, 2)
		require.Equal(t, second.ID, found[0].ID)
		require.Equal(t, first.ID, found[1].ID)
		require.Equal(t, levee.StateSucceeded, found[1].State)

		byID, err := b.ops.JobFind(ctx, first.ID)
		require.NoError(t, err)
		require.Len(t, byID, 1)
		require.Equal(t, "order-7", byID[0].Key)

		dupAtts, err := b.ops.JobAttempts(ctx, second.ID)
		require.NoError(t, err)
		require.Empty(t, dupAtts, "a duplicate never ran")

		_, err = b.ops.JobFind(ctx, "no-such-thing")
		require.ErrorIs(t, err, admin.ErrNotFound)
		_, err = b.ops.JobAttempts(ctx, "no-such-job")
		require.ErrorIs(t, err, admin.ErrNotFound)
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
		page, err := b.ops.JobList(ctx, admin.JobListParams{Kind: "page", Cursor: cursor, Limit: 40})
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
	page, err := b.ops.JobList(ctx, admin.JobListParams{State: levee.StateRunning, Kind: "page",
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

	_, err = b.ops.JobList(ctx, admin.JobListParams{State: levee.StateQueued})
	require.ErrorIs(t, err, admin.ErrBadFilter)
	_, err = b.ops.JobList(ctx, admin.JobListParams{Cursor: "garbage!"})
	require.ErrorIs(t, err, admin.ErrBadFilter)
	_, err = b.ops.JobList(ctx, admin.JobListParams{Limit: 501})
	require.ErrorIs(t, err, admin.ErrBadFilter)
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
			ov, err := b.ops.Overview(ctx, time.Minute)
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
	var ov *admin.Overview
	gens.Range(func(k, v any) bool {
		n++
		ov = v.(*admin.Overview)
		return true
	})
	require.Equal(t, 1, n, "ten concurrent callers share one computation")
	require.EqualValues(t, 1, ov.Generation)

	again, err := b.ops.Overview(ctx, time.Minute)
	require.NoError(t, err)
	require.Same(t, ov, again, "cached for maxAge")
	fresh, err := b.ops.Overview(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 2, fresh.Generation, "maxAge 0 computes again")

	require.EqualValues(t, 1, ov.Counts[levee.StateSucceeded])
	require.Len(t, ov.Buckets, 60)
	var kind *admin.KindInfo
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
	require.NoError(t, b.ops.AuditRecord(ctx, admin.AuditRecordParams{By: "ada", Action: "note", Target: "x", Detail: "first"}))
	_, err := b.client.Publish(ctx, "mail", nil) // a kind Levee knows of
	require.NoError(t, err)
	require.NoError(t, b.ops.KindPause(ctx, "mail", "grace"))
	require.NoError(t, b.ops.KindResume(ctx, "mail", "grace"))
	log, err := b.ops.AuditList(ctx, 2)
	require.NoError(t, err)
	require.Len(t, log, 2)
	require.Equal(t, leveetype.AuditEntry{At: log[0].At, Actor: "grace", Action: "resume", Target: "mail"}, log[0])
	require.Equal(t, "pause", log[1].Action)
	require.WithinDuration(t, time.Now(), log[0].At, time.Minute)
}

// kindInfo returns kind's line of a fresh Overview.
func (b *bundle) kindInfo(t *testing.T, kind string) admin.KindInfo {
	t.Helper()
	ov, err := b.ops.Overview(context.Background(), 0)
	require.NoError(t, err)
	for _, k := range ov.Kinds {
		if k.Kind == kind {
			return k
		}
	}
	return admin.KindInfo{Kind: kind}
}

// waitKind polls kind's Overview line until ok holds.
func (b *bundle) waitKind(t *testing.T, kind string, within time.Duration, ok func(admin.KindInfo) bool) admin.KindInfo {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		k := b.kindInfo(t, kind)
		if ok(k) {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("kind %s: condition not met within %s; last %+v", kind, within, k)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// counting is a handler that counts its calls and succeeds.
type counting struct{ n atomic.Int32 }

func (c *counting) Work(ctx context.Context, job *levee.Job) (any, error) {
	c.n.Add(1)
	return nil, nil
}

func TestPauseResume(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var paused, flowing counting
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		require.NoError(t, w.Handle("paused", &paused, levee.Policy{}))
		require.NoError(t, w.Handle("flowing", &flowing, levee.Policy{}))
		run(t, w)
		b.waitKind(t, "paused", 10*time.Second, func(k admin.KindInfo) bool { return k.Workers == 1 })

		require.NoError(t, b.ops.KindPause(ctx, "paused", "ops"))
		k := b.waitKind(t, "paused", 10*time.Second, func(k admin.KindInfo) bool { return k.PausedWorkers == 1 })
		require.True(t, k.Paused)
		require.Equal(t, leveetype.Actor("ops"), k.PausedBy)
		require.NotNil(t, k.PausedAt)
		stats, err := b.ops.Stats(ctx)
		require.NoError(t, err)
		for _, ks := range stats.Kinds {
			assert.Equal(t, ks.Kind == "paused", ks.Paused, "stats shows the pause of %s", ks.Kind)
			if ks.Kind == "paused" {
				assert.Equal(t, "ops", ks.PausedBy)
				assert.NotNil(t, ks.PausedAt)
			}
		}

		var held, other []string
		for range 5 {
			r, err := b.client.Publish(ctx, "paused", nil)
			require.NoError(t, err)
			held = append(held, r.ID)
			r, err = b.client.Publish(ctx, "flowing", nil)
			require.NoError(t, err)
			other = append(other, r.ID)
		}
		for _, id := range other {
			require.Equal(t, levee.StateSucceeded, b.waitFinal(t, id, 20*time.Second).State)
		}

		// A worker started while the kind is paused starts paused.
		var late counting
		b.startWorker(t, "paused", &late, levee.Policy{}, func(c *levee.WorkerConfig) { c.ID = "late" })
		b.waitKind(t, "paused", 10*time.Second, func(k admin.KindInfo) bool { return k.Workers == 2 && k.PausedWorkers == 2 })
		for _, id := range held {
			st, err := b.client.Status(ctx, id)
			require.NoError(t, err)
			require.Equal(t, levee.StateQueued, st.State, "job %s of a paused kind", id)
		}
		require.Zero(t, paused.n.Load()+late.n.Load())

		require.NoError(t, b.ops.KindResume(ctx, "paused", "ops"))
		for _, id := range held {
			require.Equal(t, levee.StateSucceeded, b.waitFinal(t, id, 20*time.Second).State)
		}
		require.EqualValues(t, 5, paused.n.Load()+late.n.Load())
		require.Zero(t, b.kindInfo(t, "paused").PausedWorkers)
	})
}

func TestResetBreakerFleetWide(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[1])
	ctx := context.Background()
	var failing atomic.Bool
	failing.Store(true)
	h := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		if failing.Load() {
			return nil, errors.New("downstream down")
		}
		return "ok", nil
	})
	policy := levee.Policy{Breaker: levee.BreakerPolicy{MinCalls: 1, FailureRate: 1, OpenFor: time.Hour}, Concurrency: 1}
	b.startWorker(t, "brk", h, policy, func(c *levee.WorkerConfig) { c.ID = "w1" })
	b.startWorker(t, "brk", h, policy, func(c *levee.WorkerConfig) { c.ID = "w2" })
	q := leveetest.Queue(t, b.nats, b.ns)

	// Publish until both workers have seen a failure and opened their breakers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := b.client.Publish(ctx, "brk", nil)
		require.NoError(t, err)
		entries, err := fleet.New(q).Entries(ctx)
		require.NoError(t, err)
		open := 0
		for _, e := range entries["brk"] {
			if e.Breaker == "open" {
				open++
			}
		}
		if open == 2 {
			break
		}
		require.False(t, time.Now().After(deadline), "breakers not both open: %+v", entries["brk"])
		time.Sleep(200 * time.Millisecond)
	}
	k := b.kindInfo(t, "brk")
	require.Equal(t, "open", k.Breaker)
	require.NotNil(t, k.BreakerUntil)
	// The Overview shows the shared record: its next trial, why and by whom it opened.
	store, err := fleet.New(q).Breakers(ctx, false)
	require.NoError(t, err)
	v, _, found, err := store.Get(ctx, "brk")
	require.NoError(t, err)
	require.True(t, found)
	rec := executor.ParseShared(v)
	require.Equal(t, "fleet", k.BreakerScope)
	require.True(t, rec.Until.Equal(*k.BreakerUntil), "next trial %s, record's until %s", k.BreakerUntil, rec.Until)
	require.Equal(t, rec.By, k.BreakerBy)
	require.Contains(t, k.BreakerReason, "calls failed in the fleet's window")
	require.Positive(t, k.BreakerCalls)
	require.Equal(t, k.BreakerCalls, k.BreakerFailures)
	require.InDelta(t, 1.0, k.BreakerFailureRate, 1e-9)
	require.Zero(t, k.BreakerCutOff)

	failing.Store(false)
	res, err := b.ops.BreakerReset(ctx, admin.BreakerResetParams{Kind: "brk", By: "ops", Wait: 5 * time.Second})
	require.NoError(t, err)
	require.Equal(t, admin.BreakerResetResult{Gen: 2, Workers: 2, Acknowledged: 2}, res,
		"one opening (gen 1), one reset (gen 2), applied by both workers")
	k = b.waitKind(t, "brk", 10*time.Second, func(k admin.KindInfo) bool { return k.Breaker == "closed" && k.Workers == 2 })
	require.Equal(t, "reset", k.BreakerReason)
	require.Equal(t, "ops", k.BreakerBy)
	require.Nil(t, k.BreakerUntil)
	r, err := b.client.Publish(ctx, "brk", nil)
	require.NoError(t, err)
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
	log, err := b.ops.AuditList(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "breaker_reset", log[0].Action)
	require.Equal(t, leveetype.Actor("ops"), log[0].Actor)
}

func TestCancelRetryingThenRetry(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var calls atomic.Int32
		var fixed atomic.Bool
		h := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			if fixed.Load() {
				return "ok", nil
			}
			return nil, levee.RetryAfter(time.Hour, errors.New("provider busy"))
		})
		b.startWorker(t, "slow", h, levee.Policy{})
		r, err := b.client.Publish(ctx, "slow", map[string]string{"to": "ada"})
		require.NoError(t, err)
		waitState(t, b, r.ID, levee.StateRetrying)

		require.NoError(t, b.ops.JobCancel(ctx, r.ID, "ops"))
		st, err := b.client.Status(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, admin.ReasonCancelled, st.Reason)
		e := b.dlqEntry(t, r.ID)
		require.Equal(t, admin.ReasonCancelled, e.Reason)
		require.Equal(t, 1, e.Attempts)
		require.ErrorIs(t, b.ops.JobCancel(ctx, r.ID, "ops"), admin.ErrConflict, "already dead")

		fixed.Store(true)
		require.NoError(t, b.ops.JobRetry(ctx, r.ID, "ops"))
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
		require.EqualValues(t, 2, calls.Load())
		require.ErrorIs(t, b.ops.JobRetry(ctx, r.ID, "ops"), admin.ErrConflict, "succeeded")

		log, err := b.ops.AuditList(ctx, 10)
		require.NoError(t, err)
		require.Len(t, log, 2)
		require.Equal(t, "retry", log[0].Action)
		require.Equal(t, "cancel", log[1].Action)
		require.Equal(t, r.ID, log[1].Target)
	})
}

func TestCancelQueued(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		r, err := b.client.Publish(ctx, "later", nil)
		require.NoError(t, err)
		require.NoError(t, b.ops.JobCancel(ctx, r.ID, "ops"))
		st, err := b.client.Status(ctx, r.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, admin.ReasonCancelled, st.Reason)
		require.Equal(t, admin.ReasonCancelled, b.dlqEntry(t, r.ID).Reason)

		// The worker receives the message, finds the key dead, and drops it unrun.
		var h counting
		b.startWorker(t, "later", &h, levee.Policy{})
		deadline := time.Now().Add(20 * time.Second)
		for {
			k := b.kindInfo(t, "later")
			if k.Workers == 1 && k.Backlog == 0 && k.InFlight == 0 {
				break
			}
			require.False(t, time.Now().After(deadline), "message not settled: %+v", k)
			time.Sleep(50 * time.Millisecond)
		}
		require.Zero(t, h.n.Load(), "a cancelled job never runs")

		require.NoError(t, b.ops.JobRetry(ctx, r.ID, "ops"))
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
		require.EqualValues(t, 1, h.n.Load())
	})
}

func TestCancelRunningConflicts(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	release := make(chan struct{})
	b.startWorker(t, "busy", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		<-release
		return nil, nil
	}), levee.Policy{})
	r, err := b.client.Publish(ctx, "busy", nil)
	require.NoError(t, err)
	waitState(t, b, r.ID, levee.StateRunning)
	err = b.ops.JobCancel(ctx, r.ID, "ops")
	require.ErrorIs(t, err, admin.ErrConflict)
	require.ErrorIs(t, b.ops.JobRetry(ctx, r.ID, "ops"), admin.ErrConflict)
	atts, err := b.ops.JobAttempts(ctx, r.ID)
	require.NoError(t, err)
	require.Len(t, atts, 1)
	require.Equal(t, "running", atts[0].Outcome)
	close(release)
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
	require.ErrorIs(t, b.ops.JobCancel(ctx, r.ID, "ops"), admin.ErrConflict)
	require.ErrorIs(t, b.ops.JobCancel(ctx, "nope", "ops"), admin.ErrNotFound)
}

func waitState(t *testing.T, b *bundle, id string, want levee.State) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := b.client.Status(context.Background(), id)
		if err == nil && st.State == want {
			return
		}
		require.False(t, time.Now().After(deadline), "job %s not %s: %+v %v", id, want, st, err)
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRetryRetryingRunsNow(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[1])
	ctx := context.Background()
	var calls atomic.Int32
	b.startWorker(t, "later", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		if calls.Add(1) == 1 {
			return nil, levee.RetryAfter(time.Hour, errors.New("come back in an hour"))
		}
		return "ok", nil
	}), levee.Policy{})
	r, err := b.client.Publish(ctx, "later", nil)
	require.NoError(t, err)
	waitState(t, b, r.ID, levee.StateRetrying)
	require.NoError(t, b.ops.JobRetry(ctx, r.ID, "ops"))
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
	require.EqualValues(t, 2, calls.Load())
	atts, err := b.ops.JobAttempts(ctx, r.ID)
	require.NoError(t, err)
	require.Len(t, atts, 2)
	require.Contains(t, atts[0].Error, "come back in an hour")
}

// A replay keeps the job's history as history: its last error goes with its old life (status
// no longer shows it), and its attempts show where the new life starts, by whom.
func TestReplayKeepsHistoryAsHistory(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	var calls atomic.Int32
	var fixed atomic.Bool
	b.startWorker(t, "fixme", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		calls.Add(1)
		if !fixed.Load() {
			return nil, levee.Permanent(errors.New("bad template"))
		}
		return "sent", nil
	}), levee.Policy{})
	r, err := b.client.Publish(ctx, "fixme", nil)
	require.NoError(t, err)
	require.Equal(t, levee.StateDead, b.waitFinal(t, r.ID, 20*time.Second).State)
	require.Eventually(t, func() bool { _, err := b.ops.DeadJobGet(ctx, r.ID); return err == nil }, 10*time.Second, 20*time.Millisecond)

	require.NoError(t, b.ops.KindPause(ctx, "fixme", "ada")) // so that no attempt runs before the look
	b.waitKind(t, "fixme", 10*time.Second, func(k admin.KindInfo) bool { return k.PausedWorkers == 1 })
	require.NoError(t, b.ops.JobRetry(ctx, r.ID, "ada"))
	st, err := b.client.Status(ctx, r.ID)
	require.NoError(t, err)
	require.Empty(t, st.LastError, "the old error is history, not the job's state")
	fixed.Store(true)
	require.NoError(t, b.ops.KindResume(ctx, "fixme", "ada"))
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)

	atts, err := b.ops.JobAttempts(ctx, r.ID)
	require.NoError(t, err)
	var got []string
	for _, a := range atts {
		got = append(got, fmt.Sprintf("%d %s %s", a.N, a.Outcome, a.Worker))
	}
	require.Len(t, got, 3, "%v", got)
	require.True(t, strings.HasPrefix(got[0], "1 failed"), "%v", got)
	require.Equal(t, "0 replayed ada", got[1])
	require.True(t, strings.HasPrefix(got[2], "1 succeeded"), "%v", got)
}
