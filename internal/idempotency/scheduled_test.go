package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/leveetype"
)

func scheduled(id string, runAt time.Time) idempotency.ScheduledJob {
	return idempotency.ScheduledJob{ID: id, Kind: "k", Key: id, Payload: []byte(`{"n":1}`), RunAt: runAt, Origin: idempotency.OriginDelay}
}

func TestScheduleStoresOnceAndReportsStatus(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	at := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	runAt, err := l.Schedule(ctx, []idempotency.ScheduledJob{scheduled("a", at), scheduled("a", at.Add(time.Hour)), scheduled("b", time.Time{})})
	require.NoError(t, err)
	require.WithinDuration(t, at, runAt[0], time.Microsecond)
	require.True(t, runAt[1].IsZero(), "the second job with id a is not stored")
	require.WithinDuration(t, time.Now(), runAt[2], 5*time.Second, "no time: due now")

	again, err := l.Schedule(ctx, []idempotency.ScheduledJob{scheduled("a", at)})
	require.NoError(t, err)
	require.True(t, again[0].IsZero(), "an id already waiting is a duplicate")

	st, err := l.Status(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, leveetype.StateScheduled, st.State)
	require.WithinDuration(t, at, *st.RunAt, time.Microsecond)
}

func TestDispatchDueTakesEachRowOnce(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	var jobs []idempotency.ScheduledJob
	for i := range 300 {
		jobs = append(jobs, scheduled(fmt.Sprintf("job-%03d", i), time.Now().Add(-time.Second)))
	}
	jobs = append(jobs, scheduled("later", time.Now().Add(time.Hour)))
	_, err := l.Schedule(ctx, jobs)
	require.NoError(t, err)

	// Four dispatchers at once, 50 rows each pass: every due row is published once.
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				taken, done, err := l.DispatchDue(ctx, 50, func(js []idempotency.ScheduledJob) []error {
					mu.Lock()
					defer mu.Unlock()
					for _, j := range js {
						seen[j.ID]++
					}
					time.Sleep(5 * time.Millisecond) // hold the rows a while
					return make([]error, len(js))
				})
				require.NoError(t, err)
				require.Len(t, done, taken)
				if taken == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	require.Len(t, seen, 300)
	for id, n := range seen {
		require.Equal(t, 1, n, "job %s published %d times", id, n)
	}
	_, err = l.ScheduledStatus(ctx, "later")
	require.NoError(t, err, "a job not due stays")
	job, _, err := l.UntilDue(ctx)
	require.NoError(t, err)
	require.True(t, job.OK)
	require.InDelta(t, time.Hour.Seconds(), job.D.Seconds(), 10)
}

func TestDispatchDueKeepsWhatFailedToPublish(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	_, err := l.Schedule(ctx, []idempotency.ScheduledJob{scheduled("ok", time.Time{}), scheduled("fails", time.Time{})})
	require.NoError(t, err)
	taken, done, err := l.DispatchDue(ctx, 10, func(js []idempotency.ScheduledJob) []error {
		errs := make([]error, len(js))
		for i, j := range js {
			if j.ID == "fails" {
				errs[i] = errors.New("stream full")
			}
		}
		return errs
	})
	require.NoError(t, err)
	require.Equal(t, 2, taken)
	require.Len(t, done, 1)
	_, err = l.ScheduledStatus(ctx, "ok")
	require.ErrorIs(t, err, idempotency.ErrNotFound, "a published job's row is deleted")
	j, err := l.ScheduledStatus(ctx, "fails")
	require.NoError(t, err)
	require.Equal(t, 1, j.DispatchErrors)
	require.Equal(t, "stream full", j.LastError)
	require.True(t, j.RunAt.After(time.Now().Add(-time.Second)), "tried again after a backoff")

	// Run now makes it due at once; cancel deletes it.
	_, err = l.RunScheduledNow(ctx, "fails")
	require.NoError(t, err)
	job, _, err := l.UntilDue(ctx)
	require.NoError(t, err)
	require.True(t, job.Due())
	_, _, err = l.CancelScheduledJob(ctx, "fails", "cancelled by test")
	require.NoError(t, err)
	_, _, err = l.CancelScheduledJob(ctx, "fails", "cancelled by test")
	require.ErrorIs(t, err, idempotency.ErrNotFound)
	job, _, err = l.UntilDue(ctx)
	require.NoError(t, err)
	require.False(t, job.OK, "nothing waits")
}

func TestPeriodicRegisterAndTickOnce(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	p := leveetype.PeriodicJob{Name: "p", Kind: "k", Every: time.Second, CatchUp: leveetype.CatchUpAll}
	require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{p}, 0))
	entries, err := l.ListPeriodic(ctx)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	first := entries[0].NextRun

	// Registering again (a restart) keeps the next tick; a new schedule starts again.
	require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{p}, 0))
	entries, err = l.ListPeriodic(ctx)
	require.NoError(t, err)
	require.Equal(t, first, entries[0].NextRun)

	time.Sleep(time.Until(first.Add(2100 * time.Millisecond)))
	// Ticking from several dispatchers at once enqueues each due tick once.
	var wg sync.WaitGroup
	var mu sync.Mutex
	total := 0
	for range 4 {
		wg.Go(func() {
			n, err := l.TickPeriodic(ctx, time.Minute, 1000)
			require.NoError(t, err)
			mu.Lock()
			total += n
			mu.Unlock()
		})
	}
	wg.Wait()
	require.Equal(t, 3, total, "ticks at first, first+1s, first+2s")
	rows, err := idempotency.ListScheduled(ctx, l)
	require.NoError(t, err)
	keys := map[string]bool{}
	for _, r := range rows {
		keys[r.Key] = true
		require.Equal(t, idempotency.OriginPeriodic, r.Origin)
	}
	require.True(t, keys[leveetype.TickKey("p", first)], "keys %v", keys)
	require.Len(t, keys, 3)

	paused, err := l.PausePeriodic(ctx, "p", true)
	require.NoError(t, err)
	require.True(t, paused.Paused)
	_, periodic, err := l.UntilDue(ctx)
	require.NoError(t, err)
	require.False(t, periodic.OK, "a paused job is not waited for")
	_, err = l.PausePeriodic(ctx, "nope", true)
	require.ErrorIs(t, err, idempotency.ErrNotFound)
}

func TestPeriodicKeepsPayloadAndLeavesWhatItCannotRead(t *testing.T) {
	t.Parallel()
	l := setup(t)
	ctx := context.Background()
	p := leveetype.PeriodicJob{Name: "p", Kind: "k", Every: time.Second, CatchUp: leveetype.CatchUpAll, Payload: []byte(`{"zeta":1,"a":{"b":2.50,"big":1e2},"u":"a?x=1&y=<2>"}`)}
	require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{p}, 0))
	entries, err := l.ListPeriodic(ctx)
	require.NoError(t, err)
	first := entries[0].NextRun
	time.Sleep(time.Until(first.Add(100 * time.Millisecond)))
	n, err := l.TickPeriodic(ctx, time.Minute, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	rows, err := idempotency.ListScheduled(ctx, l)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, `{"zeta":1,"a":{"b":2.50,"big":1e2},"u":"a?x=1&y=<2>"}`, string(rows[0].Payload), "published as written")

	// A definition this worker cannot read is left for one that can: its tick is not lost.
	_, err = l.Pool().Exec(ctx, `UPDATE `+pgx.Identifier{l.Schema()}.Sanitize()+`.periodic SET def = '{"name":"p","kind":"k","every":"1s","catch_up":"sometimes"}'`)
	require.NoError(t, err)
	entries, err = l.ListPeriodic(ctx)
	require.NoError(t, err)
	due := entries[0].NextRun
	time.Sleep(time.Until(due.Add(100 * time.Millisecond)))
	_, err = l.TickPeriodic(ctx, time.Minute, 10)
	require.ErrorContains(t, err, "catch_up")
	entries, err = l.ListPeriodic(ctx)
	require.NoError(t, err)
	require.Equal(t, due, entries[0].NextRun, "the due tick stays due")
	// Held for the others, it neither blocks an entry this worker can tick nor looks due.
	q := leveetype.PeriodicJob{Name: "q", Kind: "k", Every: time.Second}
	require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{q}, 0))
	time.Sleep(1100 * time.Millisecond)
	n, err = l.TickPeriodic(ctx, time.Minute, 10)
	require.NoError(t, err, "the unreadable entry is held, not taken again")
	require.Equal(t, 1, n, "q ticks")
	_, periodic, err := l.UntilDue(ctx)
	require.NoError(t, err)
	require.False(t, periodic.Due(), "nothing periodic is due: p is held, q ticked")
	require.NoError(t, l.DeletePeriodic(ctx, "q"))

	// Registered again (readable), the tick runs under its own key.
	require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{p}, 0))
	n, err = l.TickPeriodic(ctx, time.Minute, 10)
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, 1)
	rows, err = idempotency.ListScheduled(ctx, l)
	require.NoError(t, err)
	keys := map[string]bool{}
	for _, r := range rows {
		keys[r.Key] = true
	}
	require.True(t, keys[leveetype.TickKey("p", due)], "keys %v", keys)

	require.NoError(t, l.DeletePeriodic(ctx, "p"))
	require.ErrorIs(t, l.DeletePeriodic(ctx, "p"), idempotency.ErrNotFound)
	entries, err = l.ListPeriodic(ctx)
	require.NoError(t, err)
	require.Empty(t, entries)
}

// Each catch_up policy's choice after a downtime of three ticks, with the latest due tick
// later than half its period (so it is a missed one for skip).
func TestPeriodicCatchUpPolicies(t *testing.T) {
	t.Parallel()
	for catchUp, want := range map[leveetype.CatchUp]int{leveetype.CatchUpAll: 4, leveetype.CatchUpLatest: 1, leveetype.CatchUpSkip: 0} {
		t.Run(string(catchUp), func(t *testing.T) {
			t.Parallel()
			l := setup(t)
			ctx := context.Background()
			p := leveetype.PeriodicJob{Name: "p", Kind: "k", Every: 10 * time.Second, CatchUp: catchUp}
			require.NoError(t, l.RegisterPeriodic(ctx, []leveetype.PeriodicJob{p}, 0))
			for ms := time.Now().UnixMilli() % 10000; ms < 6500 || ms >= 8500; ms = time.Now().UnixMilli() % 10000 {
				time.Sleep(50 * time.Millisecond)
			}
			latest := time.UnixMilli(time.Now().UnixMilli() / 10000 * 10000).UTC()
			_, err := l.Pool().Exec(ctx, `UPDATE `+pgx.Identifier{l.Schema()}.Sanitize()+`.periodic SET next_run = $1`, latest.Add(-30*time.Second))
			require.NoError(t, err)
			n, err := l.TickPeriodic(ctx, time.Minute, 1000)
			require.NoError(t, err)
			require.Equal(t, want, n)
			rows, err := idempotency.ListScheduled(ctx, l)
			require.NoError(t, err)
			if catchUp == leveetype.CatchUpLatest {
				require.Equal(t, leveetype.TickKey("p", latest), rows[0].Key)
			}
			entries, err := l.ListPeriodic(ctx)
			require.NoError(t, err)
			require.Equal(t, latest.Add(10*time.Second), entries[0].NextRun.UTC(), "the next tick is the first after now")
		})
	}
}
