package admin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
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
	members := map[string][]fleet.Entry{
		"mail": { // each worker has its own breaker: the worst is shown
			{Worker: "a", KindStatus: fleet.KindStatus{Breaker: "open", BreakerUntil: &later, Rate: "50/s", Paused: true, BreakerCalls: 10, BreakerFailures: 6}},
			{Worker: "b", KindStatus: fleet.KindStatus{Breaker: "open", BreakerUntil: &soon, BreakerCalls: 4, BreakerFailures: 4}},
			{Worker: "c", KindStatus: fleet.KindStatus{Breaker: "closed", BreakerCalls: 9, BreakerFailures: 9}},
		},
		"pay": { // one breaker for the fleet: its record decides, whatever a worker still shows
			{Worker: "a", KindStatus: fleet.KindStatus{Breaker: "closed", BreakerFleet: true, BreakerCalls: 7, BreakerFailures: 5}},
			{Worker: "b", KindStatus: fleet.KindStatus{Breaker: "open", BreakerFleet: true, BreakerCutOff: true, BreakerCalls: 20, BreakerFailures: 20}},
			{Worker: "c", KindStatus: fleet.KindStatus{Breaker: "open", BreakerFleet: true, BreakerCalls: 8, BreakerFailures: 6}},
		},
	}
	breakers := map[string]executor.Shared{
		"pay":  {State: executor.BreakerOpen, Gen: 3, Since: now.Add(-time.Second), Until: soon, Reason: "6 of 8 calls failed in the fleet's window", By: "c"},
		"mail": {State: executor.BreakerOpen, Until: later}, // left from when mail's breaker was the fleet's
	}
	paused := map[string]fleet.ControlEntry{"mail": {By: "ada", At: now}}
	ov := assembleOverview(now, agg, work, 4, members, breakers, paused)

	require.Equal(t, map[leveetype.State]int64{leveetype.StateSucceeded: 10, leveetype.StateDead: 2, leveetype.StateQueued: 12}, ov.Counts)
	require.EqualValues(t, 12, ov.Backlog)
	require.EqualValues(t, 4, ov.DLQDepth)
	require.Equal(t, time.Hour, ov.OldestAge)
	require.Len(t, ov.Kinds, 3)
	mail := ov.Kinds[0]
	require.Equal(t, "mail", mail.Kind)
	require.Equal(t, "open", mail.Breaker)
	require.Equal(t, "worker", mail.BreakerScope)
	require.Equal(t, soon, *mail.BreakerUntil, "the earliest retry of an open breaker")
	require.Equal(t, []int{4, 4}, []int{mail.BreakerCalls, mail.BreakerFailures}, "the open breaker with the highest failure rate")
	require.InDelta(t, 1.0, mail.BreakerFailureRate, 1e-9)
	require.Equal(t, "50/s", mail.Rate)
	require.InDelta(t, 2.0, mail.RateUse, 1e-9)
	require.Equal(t, 3, mail.Workers)
	require.Equal(t, 1, mail.PausedWorkers)
	require.True(t, mail.Paused)
	require.Equal(t, leveetype.Actor("ada"), mail.PausedBy)
	require.Equal(t, KindInfo{Kind: "orphan", Backlog: 7, OldestAge: time.Hour}, ov.Kinds[1])
	pay := ov.Kinds[2]
	require.Equal(t, KindInfo{Kind: "pay", Workers: 3, Breaker: "open", BreakerUntil: &soon, BreakerScope: "fleet",
		BreakerCalls: 8, BreakerFailures: 6, BreakerFailureRate: 0.75, BreakerReason: "6 of 8 calls failed in the fleet's window",
		BreakerBy: "c", BreakerCutOff: 1}, pay, "the fullest view of a worker that reaches the record")
}
