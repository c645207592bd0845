package levee

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
)

func TestBreakerCheck(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		snap executor.BreakerSnapshot
		want Check
	}{
		{executor.BreakerSnapshot{State: executor.BreakerClosed, Calls: 12, Failures: 1},
			Check{Status: Healthy, Message: "closed: 1 of 12 calls failed (8%) in this worker's window"}},
		{executor.BreakerSnapshot{State: executor.BreakerOpen, OpenUntil: now.Add(1450 * time.Millisecond), Calls: 4, Failures: 3, Fleet: true},
			Check{Status: Degraded, Message: "fleet breaker open until 2026-03-01T12:00:01Z (next trial in 1.4s): the kind is paused; 3 of 4 calls failed (75%) in the fleet's window"}},
		{executor.BreakerSnapshot{State: executor.BreakerHalfOpen, Calls: 4, Failures: 4, Fleet: true, Trials: 1, TrialsOK: 2},
			Check{Status: Degraded, Message: "fleet breaker half-open: trial calls due now (1 out, 2 succeeded); 4 of 4 calls failed (100%) in the fleet's window"}},
		{executor.BreakerSnapshot{State: executor.BreakerHalfOpen},
			Check{Status: Degraded, Message: "half-open: trial calls due now; no calls in this worker's window"}},
		{executor.BreakerSnapshot{State: executor.BreakerClosed, Fleet: true, CutOff: true, Calls: 1},
			Check{Status: Healthy, Message: "fleet breaker closed: 0 of 1 calls failed (0%) in the fleet's window; this worker is cut off from the fleet's breaker record and decides alone from its own outcomes"}},
	} {
		require.Equal(t, tc.want, breakerCheck(now, tc.snap))
	}
}
