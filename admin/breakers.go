package admin

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
)

// The names of a kind's breaker states in Stats and the Overview.
const (
	breakerClosed   = "closed"
	breakerOpen     = "open"
	breakerHalfOpen = "half-open"
)

// kindBreaker is one kind's circuit breaker as the fleet sees it, for Stats and the Overview.
// For a breaker shared by the fleet (scope fleet) the state, the next trial, the trials and the
// reason come from the shared record, which is authoritative; the window's counts, which the
// record does not hold, from the fullest view among the live workers that reach it. For a
// breaker of each worker's own (scope worker) it is the worst of the live workers' breakers.
type kindBreaker struct {
	// state is closed, open or half-open; "" when unknown (no live worker, no shared record).
	state string
	// scope is executor.ScopeFleet or executor.ScopeWorker; "" when unknown.
	scope           string
	calls, failures int
	// nextTrial is when the next trial call is due: when an open breaker goes half-open, or
	// now for a half-open one; nil otherwise.
	nextTrial *time.Time
	// trials are the trial calls out while half-open, trialsOK those that succeeded (known
	// for a shared breaker only).
	trials, trialsOK int
	// since, reason and by are the shared record's: when, why and by whom it took its state.
	since      *time.Time
	reason, by string
	// cutOff counts the live workers that cannot reach the shared record and decide alone.
	cutOff int
}

// failureRate is failures/calls in the window, rounded to 4 decimals; 0 without calls.
func (b kindBreaker) failureRate() float64 {
	if b.calls <= 0 {
		return 0
	}
	return math.Round(float64(b.failures)/float64(b.calls)*1e4) / 1e4
}

// nextTrialSeconds is the time from now to the next trial of an open breaker, rounded to
// milliseconds; 0 unless open.
func (b kindBreaker) nextTrialSeconds(now time.Time) float64 {
	if b.state != breakerOpen || b.nextTrial == nil {
		return 0
	}
	return math.Round(max(b.nextTrial.Sub(now), 0).Seconds()*1000) / 1000
}

// breakerRecords returns the shared breakers' records by kind: none when the breakers bucket
// does not exist (no worker has shared a breaker in the namespace). It creates nothing.
func (c *Client) breakerRecords(ctx context.Context) (map[string]executor.Shared, error) {
	out := map[string]executor.Shared{}
	store, err := c.fleet.Breakers(ctx, false)
	if err != nil || store == nil {
		return out, err
	}
	all, err := store.All(ctx)
	if err != nil {
		return nil, err
	}
	for kind, v := range all {
		out[kind] = executor.ParseShared(v)
	}
	return out, nil
}

// breakerName is a fleet entry's breaker state by the names of Stats and the Overview.
func breakerName(s string) string {
	if s == "half_open" {
		return breakerHalfOpen
	}
	return s
}

// mergeBreaker merges, at now, a kind's live workers' entries and its shared record (rec,
// when found) into the fleet's view of its breaker.
func mergeBreaker(now time.Time, entries []fleet.Entry, rec executor.Shared, found bool) kindBreaker {
	var kb kindBreaker
	var shared []fleet.Entry
	for _, e := range entries {
		if e.BreakerFleet {
			shared = append(shared, e)
		}
		if e.BreakerCutOff {
			kb.cutOff++
		}
	}
	switch {
	case len(shared) > 0 || found && len(entries) == 0:
		kb.scope = executor.ScopeFleet
	case len(entries) > 0:
		kb.scope = executor.ScopeWorker
		worstBreaker(&kb, now, entries)
		return kb
	default:
		return kb
	}
	// The workers that reach the shared record speak for the fleet; all of them if none does.
	views := slices.DeleteFunc(slices.Clone(shared), func(e fleet.Entry) bool { return e.BreakerCutOff })
	if len(views) == 0 {
		views = shared
	}
	if !found {
		worstBreaker(&kb, now, views)
		return kb
	}
	kb.state = breakerClosed
	if rec.State == executor.BreakerOpen {
		kb.state = breakerOpen
		if !now.Before(rec.Until) {
			kb.state = breakerHalfOpen
		}
	}
	if !rec.Since.IsZero() {
		since := rec.Since.UTC()
		kb.since = &since
	}
	kb.reason, kb.by = rec.Reason, rec.By
	switch kb.state {
	case breakerOpen:
		until := rec.Until.UTC()
		kb.nextTrial = &until
	case breakerHalfOpen:
		due := now.UTC()
		kb.nextTrial = &due
		for _, t := range rec.Trials {
			if now.Before(t.Until) {
				kb.trials++
			}
		}
		kb.trialsOK = rec.TrialsOK
	}
	// Every view counts the fleet's outcomes; the fullest heard the most reports.
	for _, e := range views {
		if e.BreakerCalls > kb.calls || e.BreakerCalls == kb.calls && e.BreakerFailures > kb.failures {
			kb.calls, kb.failures = e.BreakerCalls, e.BreakerFailures
		}
	}
	return kb
}

// worstBreaker sets kb's state to the worst of entries' breakers, its next trial to the
// earliest among them, and its counts to those of the worst breaker with the highest failure
// rate.
func worstBreaker(kb *kindBreaker, now time.Time, entries []fleet.Entry) {
	for _, e := range entries {
		kb.state = worseBreaker(kb.state, e.Breaker)
	}
	var picked *fleet.Entry
	for i, e := range entries {
		if breakerName(e.Breaker) != kb.state {
			continue
		}
		if kb.state == breakerOpen && e.BreakerUntil != nil && (kb.nextTrial == nil || e.BreakerUntil.Before(*kb.nextTrial)) {
			until := e.BreakerUntil.UTC()
			kb.nextTrial = &until
		}
		if picked == nil || e.BreakerFailures*max(picked.BreakerCalls, 1) > picked.BreakerFailures*max(e.BreakerCalls, 1) {
			picked = &entries[i]
		}
	}
	if picked != nil {
		kb.calls, kb.failures = picked.BreakerCalls, picked.BreakerFailures
	}
	if kb.state == breakerHalfOpen {
		due := now.UTC()
		kb.nextTrial = &due
	}
}
