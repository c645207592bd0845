//go:build unix

package chaos

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// This file holds the checker's judgement of calls (design rule 0): a handler is called again
// for the same job only when (a) its previous attempt failed and is being retried, or (b) the
// worker running it died, froze, or lost Postgres for longer than the lease, and that attempt's
// call was over (answered, or given up by the worker) before another worker took the job over.
// A provider that collapses repeated calls under one Idempotency-Key (rule 12) hides second
// calls from the effects; the checker counts the calls themselves.

// attemptRef names one claim of a job: its id and the claim's fence.
type attemptRef struct {
	JobID string
	Fence int64
}

// repeat is the judgement of one call that was not the first under its key: Prev is the call
// before it (c1), Call the call itself (c2).
type repeat struct {
	Key        string
	Prev, Call call
	// Explained tells whether rule 0 allows the call; Why says which clause allowed it, or why
	// none did.
	Explained bool
	Why       string
	outage    time.Duration // the worker's longest outage between the calls, for clause (b)
}

// judgement is the verdict on every call of a scenario.
type judgement struct {
	Calls       int // calls with an idempotency key
	Repeated    int // calls beyond the first under their key
	Explained   int
	Unexplained []repeat
	// ByClause counts the explained calls per clause of rule 0, for the log.
	ByClause map[string]int
	// ShortestOutage is the shortest outage that explained a call by clause (b): how close the
	// takeovers came to the lease.
	ShortestOutage time.Duration
	// All holds every judged call, explained or not, in the order of their arrival.
	All []repeat
}

// judgeCalls orders each key's calls by arrival and judges every call after the first by the
// call before it (c1 → c2), under rule 0:
//
//   - the same fence twice is never explained: one claim called twice;
//   - c2 with a lower fence than c1 is never explained: a stale claim called after a newer one,
//     so its handler was not stopped before the takeover;
//   - c2 is never explained while c1 was still in progress at the downstream (neither answered
//     nor given up by its client when c2 arrived): two calls of one key at once;
//   - (a) c1's attempt failed: the downstream answered it with an error status (4xx or 5xx), or
//     the ledger's attempts table has a failed or timed_out row for c1's job and fence;
//   - (b) c1's worker was out for at least the lease between c1's start and c2's start: killed
//     (by the rig or by itself: a crash hook) at or after c1's start, stopped (SIGSTOP), or with
//     its Postgres cut (its own proxy, or every worker's); windows that overlap or touch are
//     joined, and the longest joined stretch within [c1 start, c2 start] must reach the lease.
//     A death lasts from the kill to c2's start: the process that made c1 never comes back.
//
// failed holds the failed and timed_out attempts of the ledger; faults the rig's record; lease
// is the kind's ack_wait.
func judgeCalls(calls []call, failed map[attemptRef]bool, faults []fault, lease time.Duration) judgement {
	byKey := map[string][]call{}
	for _, c := range calls {
		if c.Key == "" {
			continue
		}
		byKey[c.Key] = append(byKey[c.Key], c)
	}
	j := judgement{ByClause: map[string]int{}}
	for _, key := range slices.Sorted(maps.Keys(byKey)) {
		cs := byKey[key]
		slices.SortStableFunc(cs, func(a, b call) int {
			return cmp.Or(a.Start.Compare(b.Start), cmp.Compare(a.Fence, b.Fence))
		})
		j.Calls += len(cs)
		for i := 1; i < len(cs); i++ {
			rp := explain(key, cs[i-1], cs[i], failed, faults, lease)
			j.All = append(j.All, rp)
			j.Repeated++
			if rp.Explained {
				if rp.outage > 0 && (j.ShortestOutage == 0 || rp.outage < j.ShortestOutage) {
					j.ShortestOutage = rp.outage
				}
				j.Explained++
				clause, _, _ := strings.Cut(rp.Why, ":")
				j.ByClause[clause]++
				continue
			}
			j.Unexplained = append(j.Unexplained, rp)
		}
	}
	slices.SortStableFunc(j.Unexplained, func(a, b repeat) int { return a.Call.Start.Compare(b.Call.Start) })
	slices.SortStableFunc(j.All, func(a, b repeat) int { return a.Call.Start.Compare(b.Call.Start) })
	return j
}

// explain judges c2, the call after c1 under key; see judgeCalls.
func explain(key string, c1, c2 call, failed map[attemptRef]bool, faults []fault, lease time.Duration) repeat {
	rp := repeat{Key: key, Prev: c1, Call: c2}
	no := func(format string, args ...any) repeat {
		rp.Why = fmt.Sprintf(format, args...)
		return rp
	}
	yes := func(format string, args ...any) repeat {
		rp.Explained, rp.Why = true, fmt.Sprintf(format, args...)
		return rp
	}
	switch {
	case c1.Fence == 0 || c2.Fence == 0:
		return no("a call carries no Levee-Fence (a worker older than the header?)")
	case c2.Fence == c1.Fence:
		return no("same fence %d twice: one claim called twice", c1.Fence)
	case c2.Fence < c1.Fence:
		return no("fence went back from %d to %d: a stale claim called after a newer one (its handler was not stopped before the takeover)", c1.Fence, c2.Fence)
	}
	over, overAt := c1.over()
	if !over || overAt.After(c2.Start) {
		return no("the call before it (fence %d) was still in progress at the downstream: neither answered nor given up", c1.Fence)
	}
	if c1.Status >= 400 {
		return yes("(a) failed: status %d", c1.Status)
	}
	if failed[attemptRef{JobID: c1.JobID, Fence: c1.Fence}] {
		return yes("(a) failed: the ledger's attempt row")
	}
	if c1.Worker == "" {
		return no("the call before it names no worker (Levee-Test-Worker: a worker built without -tags chaos?), and its attempt did not fail")
	}
	out, what := outage(c1.Worker, c1.Start, c2.Start, faults)
	rp.outage = out
	if out >= lease {
		return yes("(b) %s: %s of the lease %s", what, out.Round(time.Millisecond), lease)
	}
	if out > 0 {
		return no("its attempt did not fail, and worker %s was out (%s) for only %s of the lease %s before the next call", c1.Worker, what, out.Round(time.Millisecond), lease)
	}
	return no("its attempt did not fail, and worker %s had no fault between the two calls (no kill, stop or Postgres cut)", c1.Worker)
}

// over reports whether the call ended at the downstream (answered) or was given up by its
// client, and when the first of those happened.
func (c call) over() (bool, time.Time) {
	switch {
	case !c.End.IsZero() && !c.Gone.IsZero():
		return true, minTime(c.End, c.Gone)
	case !c.End.IsZero():
		return true, c.End
	case !c.Gone.IsZero():
		return true, c.Gone
	}
	return false, time.Time{}
}

// deathSlack is how much earlier than a call's arrival a kill may be recorded and still have
// struck the process that made the call: SIGKILL ends the process at once, but a request it
// wrote just before arrives a moment later. A killed worker comes back only after its restart
// delay (300 ms), which is longer, so no call of the next process is ever blamed on it.
const deathSlack = 100 * time.Millisecond

// outage returns the longest stretch of [from, to] during which worker was out (dead, stopped,
// or cut off from Postgres), joining windows that overlap or touch, and names the faults that
// made it.
func outage(worker string, from, to time.Time, faults []fault) (time.Duration, string) {
	type window struct {
		from, to time.Time
		what     string
	}
	var ws []window
	for _, f := range faults {
		var w window
		switch {
		case (f.Kind == faultKill || f.Kind == faultDied) && f.Target == worker:
			// A death counts when it struck the process that made the call before: at or after
			// that call's start, less deathSlack (a request the process wrote just before the
			// signal reached it arrives, and is stamped, a moment later). It lasts until the
			// next call (that process never comes back).
			if f.At.Before(from.Add(-deathSlack)) {
				continue
			}
			w = window{from: f.At, to: to}
		case f.Kind == faultStop && f.Target == worker,
			f.Kind == faultPGCut && (f.Target == allWorkers || slices.Contains(strings.Split(f.Target, ","), worker)):
			w = window{from: f.At, to: f.Until}
			if w.to.IsZero() {
				w.to = to
			}
		default:
			continue
		}
		w.from, w.to = maxTime(w.from, from), minTime(w.to, to)
		if w.to.After(w.from) {
			w.what = f.Kind
			ws = append(ws, w)
		}
	}
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	var (
		best     time.Duration
		bestWhat string
	)
	for i := 0; i < len(ws); {
		cur, kinds := ws[i], []string{ws[i].what}
		for i++; i < len(ws) && !ws[i].from.After(cur.to); i++ {
			cur.to = maxTime(cur.to, ws[i].to)
			if !slices.Contains(kinds, ws[i].what) {
				kinds = append(kinds, ws[i].what)
			}
		}
		if d := cur.to.Sub(cur.from); d > best {
			best, bestWhat = d, strings.Join(kinds, " + ")
		}
	}
	return best, bestWhat
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// describe is one line about an unexplained call, for the checker's failure message: key,
// fences, workers and times (from the scenario's start), and why it is not explained.
func (rp repeat) describe(start time.Time) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.3fs", t.Sub(start).Seconds())
	}
	c1, c2 := rp.Prev, rp.Call
	end := "answered " + at(c1.End)
	if !c1.Gone.IsZero() && (c1.End.IsZero() || c1.Gone.Before(c1.End)) {
		end = "given up " + at(c1.Gone)
	}
	if c1.End.IsZero() && c1.Gone.IsZero() {
		end = "never answered"
	}
	return fmt.Sprintf("key %s: fence %d (worker %s, attempt %d, %s → %s, status %d) then fence %d (worker %s, attempt %d, at %s): %s",
		rp.Key, c1.Fence, orNone(c1.Worker), c1.Attempt, at(c1.Start), end, c1.Status,
		c2.Fence, orNone(c2.Worker), c2.Attempt, at(c2.Start), rp.Why)
}

func orNone(s string) string {
	if s == "" {
		return "?"
	}
	return s
}
