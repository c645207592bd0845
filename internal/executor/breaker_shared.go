package executor

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// CircuitBreaker is what a Pipeline needs of a kind's circuit breaker: a worker's own
// (Breaker) or its view of the fleet's (FleetBreaker). See Breaker for the meaning of each
// method; the two differ only in whose outcomes count and who decides a change of state.
type CircuitBreaker interface {
	Admit(ctx context.Context, max int) (int, error)
	// AdmitTrial is Admit that also tells whether the permits are trials (handed out while
	// half-open) or not (closed): a permit given while closed means nothing to the breaker
	// once it has opened, and must neither call while it is half-open nor settle a trial.
	AdmitTrial(ctx context.Context, max int) (n int, trial bool, err error)
	Record(failure bool)
	Release(n int)
	Reset()
	State() BreakerState
	OpenUntil() time.Time
	Snapshot() BreakerSnapshot
	// Outage reports whether a downstream failure of a job that has made own attempts is
	// part of a wider outage rather than the job's own (design rule 38): the breaker is open
	// or half-open, or the failure rate in the window is at or above FailureRate with more
	// failures in the window than the job could have made.
	Outage(own int) bool
}

// outage is the rule behind Outage, given the state and the window: the failure rate at or
// above rate with more failures than own, over the whole window or over its most recent part
// (an outage's onset, while the window still holds the successes from before it).
func outage(state BreakerState, w *breakerWindow, now time.Time, own int, rate float64) bool {
	if state != BreakerClosed {
		return true
	}
	over := func(calls, failures int) bool {
		return calls > 0 && failureRate(calls, failures) >= rate && failures > own
	}
	return over(w.totals(now)) || over(w.recent(now))
}

// Outage implements CircuitBreaker for one worker's breaker.
func (b *Breaker) Outage(own int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock.Now()
	return outage(b.stateAt(now), &b.window, now, own, b.cfg.FailureRate)
}

// MarshalText encodes a state by its name.
func (s BreakerState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText decodes a state's name.
func (s *BreakerState) UnmarshalText(b []byte) error {
	switch string(b) {
	case "closed":
		*s = BreakerClosed
	case "open":
		*s = BreakerOpen
	case "half_open":
		*s = BreakerHalfOpen
	default:
		return fmt.Errorf("unknown breaker state %q", b)
	}
	return nil
}

// Shared is the fleet's record of one kind's breaker, kept where every worker can read it and
// changed only by compare-and-set (design rule 37). Half-open is not stored: an open record
// whose Until has passed is half-open.
type Shared struct {
	// State is BreakerClosed or BreakerOpen.
	State BreakerState `json:"state"`
	// Gen counts the changes of state; trials belong to one generation.
	Gen uint64 `json:"gen"`
	// Epoch is the generation at which the record last closed: the window's outcomes belong
	// to an epoch, so those from before a close are never counted after it.
	Epoch uint64 `json:"epoch,omitempty"`
	// Since is when the record took its state.
	Since time.Time `json:"since"`
	// Until is when an open breaker goes half-open.
	Until time.Time `json:"until,omitzero"`
	// Trials are the trial calls handed out while half-open and not yet settled.
	Trials []Trial `json:"trials,omitempty"`
	// TrialsOK counts the trials of this generation that succeeded.
	TrialsOK int `json:"trials_ok,omitempty"`
	// Reason says why the record took its state; By names the worker or operator.
	Reason string `json:"reason,omitempty"`
	By     string `json:"by,omitempty"`
}

// Trial is one trial call granted to a worker while half-open. A trial not settled by Until
// (its worker died) is given to another worker.
type Trial struct {
	By    string    `json:"by"`
	Until time.Time `json:"until"`
}

// stateAt is the record's state at now: open past Until reads as half-open.
func (s Shared) stateAt(now time.Time) BreakerState {
	if s.State == BreakerOpen && !now.Before(s.Until) {
		return BreakerHalfOpen
	}
	return s.State
}

// activeTrials returns the trials not yet expired at now.
func (s Shared) activeTrials(now time.Time) []Trial {
	return slices.DeleteFunc(slices.Clone(s.Trials), func(t Trial) bool { return !now.Before(t.Until) })
}

// opened returns s opened at now for open, as the next generation.
func (s Shared) opened(now time.Time, open time.Duration, by, reason string) Shared {
	return Shared{State: BreakerOpen, Gen: s.Gen + 1, Epoch: s.Epoch, Since: now, Until: now.Add(open), By: by, Reason: reason}
}

// closed returns s closed at now, as the next generation.
func (s Shared) closed(now time.Time, by, reason string) Shared {
	return Shared{State: BreakerClosed, Gen: s.Gen + 1, Epoch: s.Gen + 1, Since: now, By: by, Reason: reason}
}

// ParseShared decodes a stored record; one that does not decode reads as closed at generation
// 0, which the next change replaces.
func ParseShared(v []byte) Shared {
	var s Shared
	if json.Unmarshal(v, &s) != nil {
		return Shared{}
	}
	return s
}

// Reset returns s closed at now by an operator, as the next generation.
func (s Shared) Reset(now time.Time, by string) Shared { return s.closed(now, by, "reset") }

// BreakerSync stores a kind's Shared record for the fleet.
type BreakerSync interface {
	// Update applies fn to the stored record (the zero Shared, found false, when there is
	// none) and stores its result if fn says so, by compare-and-set, calling fn again on a
	// conflict. It returns the record stored afterwards, or the current one when fn stored
	// nothing, with its revision.
	Update(ctx context.Context, fn func(cur Shared, found bool) (Shared, bool)) (Shared, uint64, error)
}
