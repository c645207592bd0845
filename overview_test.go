package levee

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

func TestMinuteBuckets(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 30, 40, 0, time.UTC)
	got := minuteBuckets(now, []idempotency.MinuteActivity{
		{Start: time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), Succeeded: 3, Failed: 1},
		{Start: time.Date(2026, 3, 1, 11, 31, 0, 0, time.UTC), Succeeded: 2},
		{Start: time.Date(2026, 3, 1, 11, 30, 0, 0, time.UTC), Succeeded: 9}, // over an hour ago
	})
	require.Len(t, got, 60)
	require.Equal(t, time.Date(2026, 3, 1, 11, 31, 0, 0, time.UTC), got[0].Start)
	require.Equal(t, ActivityBucket{Start: got[0].Start, Succeeded: 2}, got[0])
	require.Equal(t, ActivityBucket{Start: time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC), Succeeded: 3, Failed: 1}, got[59])
	require.Zero(t, got[30].Succeeded+got[30].Failed)
}

func TestWorseBreaker(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ a, b, want string }{
		{"", "closed", "closed"},
		{"closed", "half_open", "half-open"},
		{"half-open", "closed", "half-open"},
		{"half-open", "open", "open"},
		{"open", "closed", "open"},
		{"", "", ""},
	} {
		require.Equal(t, tc.want, worseBreaker(tc.a, tc.b), "%q vs %q", tc.a, tc.b)
	}
}

func TestAssembleOverview(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	soon, later := now.Add(time.Minute), now.Add(time.Hour)
	agg := &idempotency.Aggregate{
		Counts: map[idempotency.State]int64{"succeeded": 10, "dead": 2},
		Kinds:  map[string]idempotency.KindActivity{"mail": {Succeeded: 10, Failed: 3, AttemptP50: time.Second, LastMinute: 120}},
		At:     now,
	}
	work := &queue.WorkStats{Kinds: map[string]*queue.KindCounts{
		"mail":   {Consumer: true, Pending: 5, InFlight: 2, Oldest: now.Add(-time.Minute)},
		"orphan": {Stored: 7, Oldest: now.Add(-time.Hour)},
	}}
	fleet := map[string][]queue.FleetEntry{"mail": {
		{Worker: "a", KindStatus: queue.KindStatus{Breaker: "open", BreakerUntil: &later, Rate: "50/s", Paused: true}},
		{Worker: "b", KindStatus: queue.KindStatus{Breaker: "open", BreakerUntil: &soon}},
		{Worker: "c", KindStatus: queue.KindStatus{Breaker: "closed"}},
	}}
	paused := map[string]queue.ControlEntry{"mail": {By: "ada", At: now}}
	ov := assembleOverview(now, agg, work, 4, fleet, paused)

	require.Equal(t, map[State]int64{StateSucceeded: 10, StateDead: 2, StateQueued: 12}, ov.Counts)
	require.EqualValues(t, 12, ov.Backlog)
	require.EqualValues(t, 4, ov.DLQDepth)
	require.Equal(t, time.Hour, ov.OldestAge)
	require.Len(t, ov.Kinds, 2)
	mail := ov.Kinds[0]
	require.Equal(t, "mail", mail.Kind)
	require.Equal(t, "open", mail.Breaker)
	require.Equal(t, soon, *mail.BreakerUntil, "the earliest retry of an open breaker")
	require.Equal(t, "50/s", mail.Rate)
	require.InDelta(t, 2.0, mail.RateUse, 1e-9)
	require.Equal(t, 3, mail.Workers)
	require.Equal(t, 1, mail.PausedWorkers)
	require.True(t, mail.Paused)
	require.Equal(t, Actor("ada"), mail.PausedBy)
	require.Equal(t, KindInfo{Kind: "orphan", Backlog: 7, OldestAge: time.Hour}, ov.Kinds[1])
}
