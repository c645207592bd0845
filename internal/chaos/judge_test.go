//go:build unix

package chaos

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Unit tests of the checker's judgement of repeated calls (design rule 0, judgeCalls); they
// need no service.

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus s seconds.
func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// answered is a call of key by worker with fence, from start to end (seconds), answered status.
func answered(key, worker string, fence int64, start, end float64, status int) call {
	return call{Key: key, JobID: key, Worker: worker, Fence: fence, Attempt: int(fence), Start: at(start), End: at(end), Status: status}
}

const lease = 2 * time.Second

func judgeOne(t *testing.T, c1, c2 call, failed map[attemptRef]bool, faults ...fault) repeat {
	t.Helper()
	j := judgeCalls([]call{c2, c1}, failed, faults, lease) // out of order: judgeCalls orders them
	require.Equal(t, 2, j.Calls)
	require.Equal(t, 1, j.Repeated)
	if j.Explained == 1 {
		require.Empty(t, j.Unexplained)
		return repeat{Key: c1.Key, Prev: c1, Call: c2, Explained: true, Why: whyExplained(t, c1, c2, failed, faults)}
	}
	require.Len(t, j.Unexplained, 1)
	return j.Unexplained[0]
}

func whyExplained(t *testing.T, c1, c2 call, failed map[attemptRef]bool, faults []fault) string {
	t.Helper()
	rp := explain(c1.Key, c1, c2, failed, faults, lease)
	require.True(t, rp.Explained)
	return rp.Why
}

func TestJudgeCallsFirstCallsNeedNoExplanation(t *testing.T) {
	j := judgeCalls([]call{answered("a", "w1", 1, 0, 0.1, 200), answered("b", "w2", 1, 0, 0.1, 200), {Status: 400}}, nil, nil, lease)
	require.Equal(t, 2, j.Calls, "calls without a key are not counted")
	require.Zero(t, j.Repeated)
}

func TestJudgeCallsFailedAttempt(t *testing.T) {
	// (a) the downstream answered the call before with an error status.
	rp := judgeOne(t, answered("k", "w1", 1, 0, 0.1, 503), answered("k", "w1", 2, 0.3, 0.4, 200), nil)
	require.True(t, rp.Explained)
	require.Contains(t, rp.Why, "(a) failed: status 503")

	// (a) the ledger recorded the attempt before as failed (or timed out), whatever was answered.
	failed := map[attemptRef]bool{{JobID: "k", Fence: 1}: true}
	rp = judgeOne(t, answered("k", "w1", 1, 0, 0.1, 200), answered("k", "w2", 2, 0.3, 0.4, 200), failed)
	require.True(t, rp.Explained)
	require.Contains(t, rp.Why, "ledger")

	// A failed row of another fence explains nothing.
	failed = map[attemptRef]bool{{JobID: "k", Fence: 2}: true}
	rp = judgeOne(t, answered("k", "w1", 1, 0, 0.1, 200), answered("k", "w2", 2, 0.3, 0.4, 200), failed)
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "no fault")
}

func TestJudgeCallsSameFenceNeverExplained(t *testing.T) {
	kill := fault{Kind: faultKill, Target: "w1", At: at(0.2)}
	rp := judgeOne(t, answered("k", "w1", 3, 0, 0.1, 500), answered("k", "w1", 3, 5, 5.1, 200), nil, kill)
	require.False(t, rp.Explained, "a failure and a kill do not explain one claim calling twice")
	require.Contains(t, rp.Why, "same fence 3 twice")
}

func TestJudgeCallsFenceBackwardsNeverExplained(t *testing.T) {
	stop := fault{Kind: faultStop, Target: "w1", At: at(0.5), Until: at(9)}
	rp := judgeOne(t, answered("k", "w2", 2, 3, 3.1, 200), answered("k", "w1", 1, 9.1, 9.2, 200), nil, stop)
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "fence went back from 2 to 1")
}

func TestJudgeCallsKilledWorker(t *testing.T) {
	c1 := answered("k", "w1", 1, 0, 0.05, 200)
	for _, kind := range []string{faultKill, faultDied} {
		// Killed right after the call (by the rig, or by a crash hook), taken over after the lease.
		rp := judgeOne(t, c1, answered("k", "w2", 2, 2.2, 2.3, 200), nil, fault{Kind: kind, Target: "w1", At: at(0.06)})
		require.True(t, rp.Explained, kind)
		require.Contains(t, rp.Why, "(b) "+kind)

		// Taken over sooner than the lease after the death: the lease was shorter than the
		// worker's own view of it (design rule 29).
		rp = judgeOne(t, c1, answered("k", "w2", 2, 1.5, 1.6, 200), nil, fault{Kind: kind, Target: "w1", At: at(0.06)})
		require.False(t, rp.Explained, kind)
		require.Contains(t, rp.Why, "for only 1.44s of the lease 2s")
	}
	// Another worker's death, or a death before the call (of an earlier process of the same
	// worker), explains nothing.
	rp := judgeOne(t, c1, answered("k", "w2", 2, 2.2, 2.3, 200), nil, fault{Kind: faultKill, Target: "w2", At: at(0.06)})
	require.False(t, rp.Explained)
	rp = judgeOne(t, answered("k", "w1", 1, 1, 1.05, 200), answered("k", "w2", 2, 4, 4.1, 200), nil,
		fault{Kind: faultKill, Target: "w1", At: at(0.5)})
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "no fault")

	// A request the process wrote just before the signal reached it arrives a moment after the
	// kill was recorded: the kill still struck that process (its successor starts 300 ms later).
	rp = judgeOne(t, answered("k", "w1", 1, 0.505, 0.51, 200), answered("k", "w2", 2, 4, 4.1, 200), nil,
		fault{Kind: faultKill, Target: "w1", At: at(0.5)})
	require.True(t, rp.Explained, rp.Why)
}

func TestJudgeCallsStoppedWorker(t *testing.T) {
	c1 := answered("k", "w1", 1, 0, 0.3, 200)
	c2 := answered("k", "w2", 2, 3, 3.1, 200)
	rp := judgeOne(t, c1, c2, nil, fault{Kind: faultStop, Target: "w1", At: at(0.2), Until: at(6)})
	require.True(t, rp.Explained)
	require.Contains(t, rp.Why, "(b) SIGSTOP: 2.8s")
	// Still stopped at the end (no SIGCONT): the window runs to the next call.
	rp = judgeOne(t, c1, c2, nil, fault{Kind: faultStop, Target: "w1", At: at(0.2)})
	require.True(t, rp.Explained)
	// Stopped for less than the lease.
	rp = judgeOne(t, c1, c2, nil, fault{Kind: faultStop, Target: "w1", At: at(0.2), Until: at(1.5)})
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "for only 1.3s")
}

func TestJudgeCallsPostgresCut(t *testing.T) {
	c1 := answered("k", "w1", 1, 0, 0.1, 200)
	c2 := answered("k", "w2", 2, 6, 6.1, 200)
	for _, target := range []string{"w1", allWorkers, "w3,w1"} {
		rp := judgeOne(t, c1, c2, nil, fault{Kind: faultPGCut, Target: target, At: at(0.1), Until: at(5.1)})
		require.True(t, rp.Explained, target)
		require.Contains(t, rp.Why, "(b) Postgres cut: 5s")
	}
	// Another worker's cut explains nothing; nor does a blip shorter than the lease.
	rp := judgeOne(t, c1, c2, nil, fault{Kind: faultPGCut, Target: "w2", At: at(0.1), Until: at(5.1)})
	require.False(t, rp.Explained)
	rp = judgeOne(t, c1, c2, nil, fault{Kind: faultPGCut, Target: allWorkers, At: at(0.1), Until: at(2)})
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "for only 1.9s of the lease 2s")
	// Two short cuts with Postgres back between them do not add up to a lease.
	rp = judgeOne(t, c1, c2, nil,
		fault{Kind: faultPGCut, Target: allWorkers, At: at(0.5), Until: at(2)},
		fault{Kind: faultPGCut, Target: allWorkers, At: at(3), Until: at(4.5)})
	require.False(t, rp.Explained)
	// A stop followed at once by a cut is one outage.
	rp = judgeOne(t, c1, c2, nil,
		fault{Kind: faultStop, Target: "w1", At: at(0.5), Until: at(1.5)},
		fault{Kind: faultPGCut, Target: "w1", At: at(1.5), Until: at(2.7)})
	require.True(t, rp.Explained)
	require.Contains(t, rp.Why, "(b) SIGSTOP + Postgres cut: 2.2s")
}

func TestJudgeCallsPreviousCallStillInProgress(t *testing.T) {
	kill := fault{Kind: faultKill, Target: "w1", At: at(0.1)}
	// The call before was answered only after the next one arrived: two calls of one key at once.
	c1 := answered("k", "w1", 1, 0, 3, 503)
	rp := judgeOne(t, c1, answered("k", "w2", 2, 2.5, 2.6, 200), nil, kill)
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "still in progress")
	// Given up by its client (the worker cancelled it, or died) before the next one: over.
	c1.Gone = at(0.1)
	rp = judgeOne(t, c1, answered("k", "w2", 2, 2.5, 2.6, 200), nil, kill)
	require.True(t, rp.Explained)
	// Never answered nor given up.
	c1 = call{Key: "k", JobID: "k", Worker: "w1", Fence: 1, Start: at(0)}
	rp = judgeOne(t, c1, answered("k", "w2", 2, 2.5, 2.6, 200), nil, kill)
	require.False(t, rp.Explained)
}

func TestJudgeCallsNeedHeaders(t *testing.T) {
	kill := fault{Kind: faultKill, Target: "w1", At: at(0.1)}
	c1 := answered("k", "", 1, 0, 0.05, 200)
	rp := judgeOne(t, c1, answered("k", "w2", 2, 2.5, 2.6, 200), nil, kill)
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "names no worker")
	c1 = answered("k", "w1", 0, 0, 0.05, 200)
	rp = judgeOne(t, c1, answered("k", "w2", 0, 2.5, 2.6, 200), nil, kill)
	require.False(t, rp.Explained)
	require.Contains(t, rp.Why, "no Levee-Fence")
}

func TestJudgeCallsChainsAndCounts(t *testing.T) {
	calls := []call{
		answered("k", "w2", 3, 9, 9.1, 200),   // no fault since the call before: unexplained
		answered("k", "w1", 1, 0, 0.1, 503),   // first
		answered("k", "w1", 2, 0.5, 0.6, 200), // after a 503: explained
		answered("j", "w3", 1, 0, 0.1, 200),
		answered("j", "w2", 2, 3, 3.1, 200), // after w3 died: explained
	}
	faults := []fault{{Kind: faultDied, Target: "w3", At: at(0.2)}}
	j := judgeCalls(calls, nil, faults, lease)
	require.Equal(t, 5, j.Calls)
	require.Equal(t, 3, j.Repeated)
	require.Equal(t, 2, j.Explained)
	require.Equal(t, map[string]int{"(a) failed": 1, "(b) died": 1}, j.ByClause)
	require.Len(t, j.Unexplained, 1)
	u := j.Unexplained[0]
	require.Equal(t, int64(2), u.Prev.Fence)
	require.Equal(t, int64(3), u.Call.Fence)
	require.Contains(t, u.Why, "no fault")
	line := u.describe(t0)
	require.Contains(t, line, "key k: fence 2 (worker w1, attempt 2, 0.500s → answered 0.600s, status 200) then fence 3 (worker w2, attempt 3, at 9.000s)")
}
