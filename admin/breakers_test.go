package admin

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
)

func TestMergeBreaker(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	past, soon := now.Add(-time.Second), now.Add(1400*time.Millisecond)
	shared := func(state string, calls, failures int, cutOff bool) fleet.Entry {
		return fleet.Entry{KindStatus: fleet.KindStatus{Breaker: state, BreakerFleet: true, BreakerCutOff: cutOff,
			BreakerCalls: calls, BreakerFailures: failures}}
	}
	own := func(state string, until *time.Time, calls, failures int) fleet.Entry {
		return fleet.Entry{KindStatus: fleet.KindStatus{Breaker: state, BreakerUntil: until, BreakerCalls: calls, BreakerFailures: failures}}
	}
	for _, tc := range []struct {
		name    string
		entries []fleet.Entry
		rec     *executor.Shared
		want    kindBreaker
	}{
		{name: "nothing known"},
		{
			name:    "shared, open: the record's until is the next trial",
			entries: []fleet.Entry{shared("open", 4, 4, false), shared("open", 5, 4, false)},
			rec:     &executor.Shared{State: executor.BreakerOpen, Gen: 1, Since: past, Until: soon, Reason: "why", By: "w1"},
			want: kindBreaker{state: "open", scope: "fleet", calls: 5, failures: 4, nextTrial: &soon, since: &past,
				reason: "why", by: "w1"},
		},
		{
			name:    "shared, open past its until: half-open, trials due now",
			entries: []fleet.Entry{shared("open", 3, 3, false)},
			rec: &executor.Shared{State: executor.BreakerOpen, Gen: 1, Since: past, Until: past, TrialsOK: 1,
				Trials: []executor.Trial{{By: "w1", Until: soon}, {By: "w2", Until: past}}},
			want: kindBreaker{state: "half-open", scope: "fleet", calls: 3, failures: 3, nextTrial: &now, since: &past,
				trials: 1, trialsOK: 1},
		},
		{
			name:    "shared, no record yet: the workers' views, those cut off aside",
			entries: []fleet.Entry{shared("closed", 2, 1, false), shared("open", 9, 9, true)},
			want:    kindBreaker{state: "closed", scope: "fleet", calls: 2, failures: 1, cutOff: 1},
		},
		{
			name:    "shared, every worker cut off: their views",
			entries: []fleet.Entry{shared("half_open", 2, 2, true)},
			want:    kindBreaker{state: "half-open", scope: "fleet", calls: 2, failures: 2, nextTrial: &now, cutOff: 1},
		},
		{
			name: "shared, no live worker: the record",
			rec:  &executor.Shared{State: executor.BreakerClosed, Gen: 2, Since: past, Reason: "reset", By: "ops"},
			want: kindBreaker{state: "closed", scope: "fleet", since: &past, reason: "reset", by: "ops"},
		},
		{
			name:    "own breakers: the worst, a record left from scope fleet ignored",
			entries: []fleet.Entry{own("closed", nil, 10, 9), own("open", &soon, 4, 3), own("open", &now, 4, 4)},
			rec:     &executor.Shared{State: executor.BreakerClosed},
			want:    kindBreaker{state: "open", scope: "worker", calls: 4, failures: 4, nextTrial: &now},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec executor.Shared
			if tc.rec != nil {
				rec = *tc.rec
			}
			require.Equal(t, tc.want, mergeBreaker(now, tc.entries, rec, tc.rec != nil))
		})
	}
	kb := kindBreaker{state: "open", calls: 3, failures: 2, nextTrial: &soon}
	require.InDelta(t, 0.6667, kb.failureRate(), 1e-9)
	require.InDelta(t, 1.4, kb.nextTrialSeconds(now), 1e-9)
	require.Zero(t, kb.nextTrialSeconds(soon.Add(time.Second)), "never negative")
	require.Zero(t, kindBreaker{}.failureRate())
}
