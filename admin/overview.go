package admin

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// KindInfo is one kind's line in the Overview.
type KindInfo struct {
	Kind string
	// Scheduled counts the jobs waiting in the ledger for their time (delayed, periodic, or
	// published in a transaction and not yet relayed).
	Scheduled int64
	// Backlog counts the messages waiting in NATS; InFlight those delivered and not acked.
	Backlog  uint64
	InFlight int
	// OldestAge is the age of the kind's oldest job in the work stream (0 if none).
	OldestAge time.Duration
	// Succeeded1h and Failed1h count the attempts that finished in the last hour;
	// AttemptP50 and AttemptP95 are their durations' percentiles.
	Succeeded1h, Failed1h  int
	AttemptP50, AttemptP95 time.Duration
	// Breaker is the kind's circuit breaker as the fleet sees it: open, half-open or closed
	// ("" when unknown: no live worker and no shared record). For a breaker shared by the
	// fleet (BreakerScope fleet, the default) it is the shared record's state, which is
	// authoritative; for a breaker of each worker's own (scope worker), the worst across the
	// live workers. BreakerUntil is when an open breaker goes half-open: its next trial (for
	// scope worker, the earliest of the open workers'); nil unless open.
	Breaker      string
	BreakerUntil *time.Time
	// BreakerScope is "fleet" or "worker" ("" when unknown).
	BreakerScope string
	// BreakerCalls and BreakerFailures count the outcomes in the breaker's window and
	// BreakerFailureRate is their ratio (0 without calls): the fleet's window as the live
	// workers have heard it, or, for scope worker, the worst worker's.
	BreakerCalls, BreakerFailures int
	BreakerFailureRate            float64
	// BreakerTrials counts the trial calls out while half-open and BreakerTrialsOK those that
	// succeeded (shared breakers only).
	BreakerTrials, BreakerTrialsOK int
	// BreakerReason and BreakerBy say why and by whom the shared record took its state.
	BreakerReason, BreakerBy string
	// BreakerCutOff counts the live workers that cannot reach the shared record and decide
	// alone.
	BreakerCutOff int
	// Rate is the kind's configured fleet-wide rate limit as the workers report it, "" for none.
	Rate string
	// RateUse is the fleet's attempts per second over the last minute, from the attempts table.
	RateUse float64
	// Workers counts the live workers serving the kind.
	Workers int
	// Paused is true while an operator's pause is in force (PausedBy and PausedAt say whose);
	// PausedWorkers counts the live workers that have stopped pulling for it.
	Paused        bool
	PausedBy      leveetype.Actor
	PausedAt      *time.Time
	PausedWorkers int
}

// Overview is the dashboard's aggregate. It is shared by every caller of Client.Overview
// until it is refreshed: read it, do not modify it.
type Overview struct {
	// Counts holds the ledger's jobs by state (keys by state, plus duplicates as succeeded and
	// unowned dead jobs as dead), the jobs waiting in the ledger for their time as scheduled,
	// and the jobs waiting in NATS as queued.
	Counts map[leveetype.State]int64
	// DLQDepth counts the dead-letter queue's entries; Backlog the waiting messages of every
	// kind; OldestAge is the oldest waiting job's age.
	DLQDepth  uint64
	Backlog   uint64
	OldestAge time.Duration
	Kinds     []KindInfo
	// Buckets holds the last hour's finished attempts, one bucket per minute, oldest first.
	Buckets []ActivityBucket
	// At is when the aggregate was computed.
	At time.Time
	// Generation numbers the aggregates a Client computed, from 1: callers that got the same
	// Generation shared one computation.
	Generation uint64
}

// ActivityBucket counts the attempts that finished in one minute.
type ActivityBucket struct {
	Start     time.Time
	Succeeded int
	Failed    int
}

// overviewTimeout bounds one computation of the Overview.
const overviewTimeout = 30 * time.Second

// overviewCache holds the last Overview and the computation in progress.
type overviewCache struct {
	mu     sync.Mutex
	last   *Overview
	lastAt time.Time
	flight *overviewFlight
	gen    uint64
}

// overviewFlight is one computation; done is closed when ov and err are set.
type overviewFlight struct {
	done chan struct{}
	ov   *Overview
	err  error
}

// Overview returns the dashboard's aggregate. It is computed at most once per maxAge (callers
// pass e.g. 5*time.Second) and shared by all callers: concurrent callers wait for the one
// computation in progress (singleflight) and never run their own count over the ledger. A
// computation is one aggregate statement on Postgres (see idempotency.Ledger.Aggregate) and
// a few reads of NATS stream, consumer and bucket state; it does not stop when the caller that
// started it gives up, so the next caller finds it done. A failed computation is not cached.
func (c *Client) Overview(ctx context.Context, maxAge time.Duration) (*Overview, error) {
	oc := &c.overview
	oc.mu.Lock()
	if oc.last != nil && time.Since(oc.lastAt) <= maxAge {
		ov := oc.last
		oc.mu.Unlock()
		return ov, nil
	}
	f := oc.flight
	if f == nil {
		f = &overviewFlight{done: make(chan struct{})}
		oc.flight = f
		go c.computeOverview(f)
	}
	oc.mu.Unlock()
	select {
	case <-f.done:
		return f.ov, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) computeOverview(f *overviewFlight) {
	ctx, cancel := context.WithTimeout(context.Background(), overviewTimeout)
	defer cancel()
	ov, err := c.buildOverview(ctx)
	oc := &c.overview
	oc.mu.Lock()
	if err == nil {
		oc.gen++
		ov.Generation = oc.gen
		oc.last, oc.lastAt = ov, time.Now()
	}
	oc.flight = nil
	f.ov, f.err = ov, err
	oc.mu.Unlock()
	close(f.done)
}

func (c *Client) buildOverview(ctx context.Context) (*Overview, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	agg, err := c.conn.Ledger.Aggregate(ctx)
	if err != nil {
		return nil, err
	}
	work, err := c.conn.Q.WorkStats(ctx, 0)
	if errors.Is(err, queue.ErrNoStream) {
		work, err = &queue.WorkStats{}, nil
	}
	if err != nil {
		return nil, err
	}
	dlq, _, _, err := c.conn.Q.DLQUsage(ctx)
	if errors.Is(err, queue.ErrNoStream) {
		dlq, err = 0, nil
	}
	if err != nil {
		return nil, err
	}
	members, err := c.fleet.Entries(ctx)
	if err != nil {
		return nil, err
	}
	paused, err := c.fleet.Paused(ctx)
	if err != nil {
		return nil, err
	}
	breakers, err := c.breakerRecords(ctx)
	if err != nil {
		return nil, err
	}
	return assembleOverview(time.Now(), agg, work, dlq, members, breakers, paused), nil
}

// assembleOverview merges the sources of one Overview computed at now.
func assembleOverview(now time.Time, agg *idempotency.Aggregate, work *queue.WorkStats, dlq uint64,
	members map[string][]fleet.Entry, breakers map[string]executor.Shared, paused map[string]fleet.ControlEntry) *Overview {
	ov := &Overview{Counts: map[leveetype.State]int64{}, DLQDepth: dlq, At: now.UTC(), Kinds: []KindInfo{}}
	for st, n := range agg.Counts {
		ov.Counts[st] += n
	}
	var names []string
	for kind := range work.Kinds {
		names = append(names, kind)
	}
	for kind := range members {
		names = append(names, kind)
	}
	for kind := range agg.Kinds {
		names = append(names, kind)
	}
	for kind := range paused {
		names = append(names, kind)
	}
	for kind := range agg.Scheduled {
		names = append(names, kind)
	}
	slices.Sort(names)
	for _, kind := range slices.Compact(names) {
		ki := KindInfo{Kind: kind, Scheduled: agg.Scheduled[kind]}
		if kc := work.Kinds[kind]; kc != nil {
			ki.Backlog, ki.InFlight = kc.Pending, kc.InFlight
			if !kc.Consumer {
				ki.Backlog = kc.Stored
			}
			if !kc.Oldest.IsZero() {
				ki.OldestAge = max(now.Sub(kc.Oldest), 0)
			}
		}
		if a, ok := agg.Kinds[kind]; ok {
			ki.Succeeded1h, ki.Failed1h = a.Succeeded, a.Failed
			ki.AttemptP50, ki.AttemptP95 = a.AttemptP50, a.AttemptP95
			ki.RateUse = float64(a.LastMinute) / 60
		}
		ki.Workers = len(members[kind])
		for _, e := range members[kind] {
			if e.Rate != "" {
				ki.Rate = e.Rate
			}
			if e.Paused {
				ki.PausedWorkers++
			}
		}
		rec, found := breakers[kind]
		kb := mergeBreaker(now, members[kind], rec, found)
		ki.Breaker, ki.BreakerScope = kb.state, kb.scope
		if kb.state == breakerOpen {
			ki.BreakerUntil = kb.nextTrial
		}
		ki.BreakerCalls, ki.BreakerFailures, ki.BreakerFailureRate = kb.calls, kb.failures, kb.failureRate()
		ki.BreakerTrials, ki.BreakerTrialsOK = kb.trials, kb.trialsOK
		ki.BreakerReason, ki.BreakerBy, ki.BreakerCutOff = kb.reason, kb.by, kb.cutOff
		if p, ok := paused[kind]; ok {
			ki.Paused, ki.PausedBy = true, leveetype.Actor(p.By)
			at := p.At
			ki.PausedAt = &at
		}
		ov.Backlog += ki.Backlog
		ov.OldestAge = max(ov.OldestAge, ki.OldestAge)
		ov.Kinds = append(ov.Kinds, ki)
	}
	ov.Counts[leveetype.StateQueued] = int64(ov.Backlog)
	ov.Buckets = minuteBuckets(agg.At, agg.Minutes)
	return ov
}

// worseBreaker returns the worse of two breaker states (open, then half-open, then closed).
func worseBreaker(a, b string) string {
	rank := func(s string) int {
		switch s {
		case "open":
			return 3
		case "half_open", "half-open":
			return 2
		case "closed":
			return 1
		}
		return 0
	}
	w := a
	if rank(b) > rank(a) {
		w = b
	}
	if w == "half_open" {
		return "half-open"
	}
	return w
}

// minuteBuckets spreads the per-minute counts over the hour ending at now: 60 buckets, oldest
// first, empty minutes included.
func minuteBuckets(now time.Time, minutes []idempotency.MinuteActivity) []ActivityBucket {
	if now.IsZero() {
		now = time.Now()
	}
	last := now.UTC().Truncate(time.Minute)
	out := make([]ActivityBucket, 60)
	for i := range out {
		out[i].Start = last.Add(time.Duration(i-59) * time.Minute)
	}
	for _, m := range minutes {
		i := 59 - int(last.Sub(m.Start.UTC().Truncate(time.Minute))/time.Minute)
		if i >= 0 && i < 60 {
			out[i].Succeeded += m.Succeeded
			out[i].Failed += m.Failed
		}
	}
	return out
}
