package levee_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
)

// idCounter counts a handler's calls by job id.
type idCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *idCounter) Work(_ context.Context, job *levee.Job) (any, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[job.ID]++
	return nil, nil
}

func (c *idCounter) of(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[id]
}

// The operator API lists scheduled jobs: alone, soonest due first, paged by cursor; among the
// others, by when they were published. Find, Overview and Stats know them.
func TestAdminListsScheduledJobs(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	now := time.Now()
	late, err := b.client.Publish(ctx, "remind", 1, levee.WithRunAt(now.Add(3*time.Hour)), levee.WithKey("remind-late"))
	require.NoError(t, err)
	soon, err := b.client.Publish(ctx, "remind", 2, levee.WithDelay(time.Hour))
	require.NoError(t, err)
	other, err := b.client.Publish(ctx, "bill", 3, levee.WithDelay(2*time.Hour))
	require.NoError(t, err)
	queued, err := b.client.Publish(ctx, "remind", 4)
	require.NoError(t, err)

	// Scheduled only: soonest due first, one page at a time.
	var got []string
	cursor := ""
	for range 4 {
		page, err := b.ops.JobList(ctx, admin.JobListParams{State: levee.StateScheduled, Limit: 1, Cursor: cursor})
		require.NoError(t, err)
		for _, j := range page.Jobs {
			require.Equal(t, levee.StateScheduled, j.State)
			require.NotNil(t, j.RunAt)
			got = append(got, j.ID)
		}
		if cursor = page.Next; cursor == "" {
			break
		}
	}
	require.Equal(t, []string{soon.ID, other.ID, late.ID}, got)

	page, err := b.ops.JobList(ctx, admin.JobListParams{State: levee.StateScheduled, Kind: "remind"})
	require.NoError(t, err)
	require.Len(t, page.Jobs, 2)
	require.Equal(t, soon.ID, page.Jobs[0].ID)
	require.WithinDuration(t, *late.RunAt, *page.Jobs[1].RunAt, time.Millisecond)
	require.Equal(t, "remind-late", page.Jobs[1].Key)

	page, err = b.ops.JobList(ctx, admin.JobListParams{State: levee.StateScheduled, Since: now.Add(time.Minute)})
	require.NoError(t, err)
	require.Empty(t, page.Jobs, "--since bounds when they were published")

	// Unfiltered: newest published first; the queued job waits in NATS, not listed.
	page, err = b.ops.JobList(ctx, admin.JobListParams{})
	require.NoError(t, err)
	var all []string
	for _, j := range page.Jobs {
		all = append(all, j.ID)
	}
	require.Equal(t, []string{other.ID, soon.ID, late.ID}, all)
	require.NotContains(t, all, queued.ID)
	page, err = b.ops.JobList(ctx, admin.JobListParams{State: levee.StateDead})
	require.NoError(t, err)
	require.Empty(t, page.Jobs)

	_, err = b.ops.JobList(ctx, admin.JobListParams{State: "later"})
	require.ErrorIs(t, err, admin.ErrBadFilter)
	require.ErrorContains(t, err, "scheduled, running, retrying, succeeded or dead")

	found, err := b.ops.JobFind(ctx, "remind-late")
	require.NoError(t, err)
	require.Len(t, found, 1)
	require.Equal(t, late.ID, found[0].ID)
	require.Equal(t, levee.StateScheduled, found[0].State)
	atts, err := b.ops.JobAttempts(ctx, late.ID)
	require.NoError(t, err)
	require.Empty(t, atts)

	ov, err := b.ops.Overview(ctx, 0)
	require.NoError(t, err)
	require.EqualValues(t, 3, ov.Counts[levee.StateScheduled])
	require.EqualValues(t, 2, b.kindInfo(t, "remind").Scheduled)
	require.EqualValues(t, 1, b.kindInfo(t, "bill").Scheduled, "a kind whose only job is scheduled is listed")

	s, err := b.ops.Stats(ctx)
	require.NoError(t, err)
	byKind := map[string]admin.KindStats{}
	for _, k := range s.Kinds {
		byKind[k.Kind] = k
	}
	require.NotNil(t, byKind["bill"].Scheduled)
	require.EqualValues(t, 1, *byKind["bill"].Scheduled)
	require.EqualValues(t, 2, *byKind["remind"].Scheduled)
}

// JobCancel of a scheduled job takes it out of the schedule: it never runs, it is dead with
// reason cancelled (with a dead-letter copy, as a cancelled queued job has), and the cancel is
// audited. JobRetry replays it.
func TestAdminCancelScheduled(t *testing.T) {
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		victim, err := b.client.Publish(ctx, "later", map[string]int{"n": 1}, levee.WithDelay(time.Second), levee.WithMaxAttempts(3))
		require.NoError(t, err)
		witness, err := b.client.Publish(ctx, "later", map[string]int{"n": 2}, levee.WithDelay(1500*time.Millisecond))
		require.NoError(t, err)

		require.NoError(t, b.ops.JobCancel(ctx, victim.ID, "ops"))
		st, err := b.client.Status(ctx, victim.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, admin.ReasonCancelled, st.Reason)
		require.Nil(t, st.RunAt)
		e := b.dlqEntry(t, victim.ID)
		require.Equal(t, admin.ReasonCancelled, e.Reason)
		require.Equal(t, "3", e.Headers["Levee-Max-Attempts"], "the copy is the job as it would have been published")
		require.JSONEq(t, `{"n":1}`, string(e.Payload))
		require.ErrorIs(t, b.ops.JobCancel(ctx, victim.ID, "ops"), admin.ErrConflict, "already dead")
		page, err := b.ops.JobList(ctx, admin.JobListParams{State: levee.StateScheduled})
		require.NoError(t, err)
		require.Len(t, page.Jobs, 1)
		require.Equal(t, witness.ID, page.Jobs[0].ID)

		var h idCounter
		b.startWorker(t, "later", &h, levee.Policy{})
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, witness.ID, 20*time.Second).State)
		require.Zero(t, h.of(victim.ID), "a cancelled scheduled job never runs")

		log, err := b.ops.AuditList(ctx, 1)
		require.NoError(t, err)
		require.Equal(t, "cancel", log[0].Action)
		require.Equal(t, victim.ID, log[0].Target)
		require.Contains(t, log[0].Detail, "was scheduled for")

		require.NoError(t, b.ops.JobRetry(ctx, victim.ID, "ops"))
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, victim.ID, 20*time.Second).State)
		require.Equal(t, 1, h.of(victim.ID))
	})
}

// A scheduled job whose key another job holds is cancelled all the same, recorded dead
// without the key; the key's owner is untouched.
func TestAdminCancelScheduledKeyHeldElsewhere(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	var h idCounter
	b.startWorker(t, "dup", &h, levee.Policy{})
	first, err := b.client.Publish(ctx, "dup", 1, levee.WithKey("shared"))
	require.NoError(t, err)
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)
	later, err := b.client.Publish(ctx, "dup", 1, levee.WithKey("shared"), levee.WithDelay(time.Hour))
	require.NoError(t, err)

	require.NoError(t, b.ops.JobCancel(ctx, later.ID, "ops"))
	st, err := b.client.Status(ctx, later.ID)
	require.NoError(t, err)
	require.Equal(t, levee.StateDead, st.State)
	require.Equal(t, admin.ReasonCancelled, st.Reason)
	st, err = b.client.Status(ctx, first.ID)
	require.NoError(t, err)
	require.Equal(t, levee.StateSucceeded, st.State, "the key's owner is untouched")
}

// JobRetry makes a scheduled job due now; one that left the schedule meanwhile is a conflict.
func TestAdminRetryScheduledRunsNow(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	var h idCounter
	b.startWorker(t, "later", &h, levee.Policy{})
	res, err := b.client.Publish(ctx, "later", nil, levee.WithDelay(time.Hour))
	require.NoError(t, err)
	require.NoError(t, b.ops.JobRetry(ctx, res.ID, "ops"))
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, res.ID, 10*time.Second).State)
	require.Equal(t, 1, h.of(res.ID))
	log, err := b.ops.AuditList(ctx, 1)
	require.NoError(t, err)
	require.Equal(t, "retry", log[0].Action)
	require.Contains(t, log[0].Detail, "scheduled job made due now")
	require.ErrorIs(t, b.ops.JobRetry(ctx, res.ID, "ops"), admin.ErrConflict, "succeeded")
}
