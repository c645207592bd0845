package admin

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// Stats is a snapshot of a namespace: its kinds' queues and the dead-letter queue. Its JSON
// form is what `enqueue stats --json` prints.
//
// It is gathered by several requests, so under load its counts can disagree by the jobs
// published, acked or dead-lettered in between.
type Stats struct {
	// Kinds holds every kind known to the namespace, sorted by name: kinds with a durable
	// consumer (a worker served them once), with live workers, with jobs in the work stream,
	// with scheduled jobs or running or retrying keys in the ledger, or with dead jobs.
	Kinds []KindStats `json:"kinds"`
	DLQ   DLQStats    `json:"dlq"`
	// GeneratedAt is when the snapshot was taken; ages are relative to it.
	GeneratedAt time.Time `json:"generated_at"`
	// ScanCapped is true when the work stream held more jobs that no consumer accounts for
	// than Stats scans (queue.MaxScanSubjects, 100,000 subjects, one per job): kinds whose
	// subjects sort after the first 100,000 are then missing from Kinds.
	ScanCapped bool `json:"scan_capped"`
	// StrayMessages counts the work stream's messages whose subject is no job's: no id token
	// (<ns>.jobs.<kind>), tokens after the id (<ns>.jobs.<kind>.<id>.<more>), or a kind token
	// that is no valid kind. No kind's worker takes them; workers dead-letter the first two
	// sorts as malformed (design rule 35), so a count that stays up means no worker runs, or
	// kind tokens that are no valid kind (those wait until removed by hand).
	StrayMessages uint64 `json:"stray_messages"`
}

// KindStats is one kind's line in Stats.
type KindStats struct {
	Kind string `json:"kind"`
	// Backlog counts the jobs not yet delivered: from the kind's consumer when it has one;
	// otherwise every job of the kind in the work stream (for a kind past the scan's cap, its
	// subjects: one per job id).
	Backlog uint64 `json:"backlog"`
	// InFlight counts the jobs delivered and not yet acked (running, or waiting for their next
	// attempt); Redelivered those of them delivered more than once.
	InFlight    int `json:"in_flight"`
	Redelivered int `json:"redelivered"`
	// Retrying and Running count the kind's keys in those states in the ledger. They are nil
	// (JSON null) when the Client has no database.
	Retrying *int64 `json:"retrying"`
	Running  *int64 `json:"running"`
	// Scheduled counts the kind's jobs waiting in the ledger for their time (delayed,
	// periodic, or published in a transaction and not yet relayed); nil (JSON null) when the
	// Client has no database.
	Scheduled *int64 `json:"scheduled"`
	// Dead counts the kind's entries in the dead-letter queue.
	Dead int `json:"dead"`
	// OldestAgeSeconds is the age of the oldest job of the kind still in the work stream
	// (waiting or in flight), 0 if there is none.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	// Consumers is 1 when the kind's durable consumer exists, else 0.
	Consumers int `json:"consumers"`
	// Workers counts the live workers of the kind in the fleet registry.
	Workers int `json:"workers"`
	// Served is true when the kind's durable consumer exists: some worker served it once. A
	// kind that is not served and has no workers is an orphan: its jobs wait until a worker
	// serves it, or an operator captures them (Client.OrphanCapture).
	Served bool `json:"served"`
	// Paused is true while an operator's pause of the kind is in force (enqueue pause);
	// PausedBy and PausedAt say who paused it and when ("" and null otherwise).
	Paused   bool       `json:"paused"`
	PausedBy string     `json:"paused_by"`
	PausedAt *time.Time `json:"paused_at"`

	// Breaker is the kind's circuit breaker as the fleet sees it: closed, open or half-open,
	// "" when unknown (no live worker and no shared record). For a breaker shared by the fleet
	// (BreakerScope fleet, the default) it is the shared record's state, which is
	// authoritative; for a breaker of each worker's own (scope worker), the worst of the live
	// workers'.
	Breaker string `json:"breaker"`
	// BreakerScope is "fleet" or "worker" ("" when unknown), as the live workers report it;
	// fleet for a kind no worker serves that has a shared record.
	BreakerScope string `json:"breaker_scope"`
	// BreakerCalls and BreakerFailures count the outcomes in the breaker's window, and
	// BreakerFailureRate is their ratio (0 without calls): the fleet's window as the live
	// workers that reach the shared record have heard it (the fullest of their views), or, for
	// scope worker, the window of the worst worker's breaker. 0 without a live worker.
	BreakerCalls       int     `json:"breaker_calls"`
	BreakerFailures    int     `json:"breaker_failures"`
	BreakerFailureRate float64 `json:"breaker_failure_rate"`
	// BreakerNextTrial is when the next trial call is due: when an open breaker goes
	// half-open, or GeneratedAt for a half-open one (trials are due now); nil (JSON null) for
	// a closed breaker. BreakerNextTrialSeconds is the time from GeneratedAt to it for an open
	// breaker, 0 otherwise.
	BreakerNextTrial        *time.Time `json:"breaker_next_trial"`
	BreakerNextTrialSeconds float64    `json:"breaker_next_trial_seconds"`
	// BreakerTrials counts the trial calls out while the breaker is half-open, and
	// BreakerTrialsOK those that succeeded (of half_open_calls needed to close it); known for
	// a shared breaker only.
	BreakerTrials   int `json:"breaker_trials"`
	BreakerTrialsOK int `json:"breaker_trials_ok"`
	// BreakerSince, BreakerReason and BreakerBy say when, why and by whom (a worker, or an
	// operator's reset) the shared record took its state; nil and "" without one.
	BreakerSince  *time.Time `json:"breaker_since"`
	BreakerReason string     `json:"breaker_reason"`
	BreakerBy     string     `json:"breaker_by"`
	// BreakerCutOff counts the live workers that cannot reach the shared record and decide
	// alone, from their own outcomes, until they reach it again.
	BreakerCutOff int `json:"breaker_cut_off"`
}

// Orphan reports whether no worker serves the kind: it has no consumer and no live worker.
func (k KindStats) Orphan() bool { return !k.Served && k.Workers == 0 }

// DLQStats counts the dead-letter queue.
type DLQStats struct {
	Total int `json:"total"`
	// ByReason counts entries by reason ("unknown" for a copy without one).
	ByReason map[string]int `json:"by_reason"`
}

// Stats returns a snapshot of the namespace's queues and circuit breakers. It needs only NATS;
// with a database it adds the ledger's running and retrying counts, read by one grouped query
// that scans the ledger's keys table (fine for an operator's look every few seconds, not for a
// hot path), and its scheduled jobs per kind (one grouped query on the scheduled table). Streams and buckets that do not exist yet count as empty; Stats creates nothing.
// The breakers come from the fleet registry's entries and the shared breakers' records (one
// read per kind whose breaker the fleet shares).
//
// Its cost grows with the dead-letter queue (the headers of every entry are read) and, only
// when the work stream holds jobs that no consumer accounts for, with those jobs (one subject
// each, up to a cap: see ScanCapped).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	if err := c.conn.Q.CheckJetStream(ctx); err != nil {
		return nil, err
	}
	if err := c.conn.CheckSetup(ctx); err != nil {
		return nil, err
	}
	work, err := c.conn.Q.WorkStats(ctx, 0)
	if errors.Is(err, queue.ErrNoStream) {
		work, err = &queue.WorkStats{}, nil
	}
	if err != nil {
		return nil, err
	}
	members, err := c.fleet.Entries(ctx)
	if err != nil {
		return nil, err
	}
	breakers, err := c.breakerRecords(ctx)
	if err != nil {
		return nil, err
	}
	dead, err := c.conn.Q.DeadStats(ctx)
	if errors.Is(err, queue.ErrNoStream) {
		dead, err = &queue.DeadCounts{}, nil
	}
	if err != nil {
		return nil, err
	}
	paused, err := c.fleet.Paused(ctx)
	if err != nil {
		return nil, err
	}
	var (
		live      map[string]idempotency.LiveCount
		scheduled map[string]int64
	)
	if c.conn.Ledger != nil {
		if live, err = c.conn.Ledger.LiveCounts(ctx); err != nil {
			return nil, err
		}
		if scheduled, err = c.conn.Ledger.CountScheduled(ctx); err != nil {
			return nil, err
		}
	}
	s := buildStats(time.Now(), work, members, breakers, dead, live, c.conn.Ledger != nil)
	addScheduled(s, scheduled)
	addPauses(s, paused)
	return s, nil
}

// buildStats merges the sources of a snapshot taken at now. withLedger says whether live holds
// the ledger's counts (possibly none) or there is no ledger.
func buildStats(now time.Time, work *queue.WorkStats, members map[string][]fleet.Entry, breakers map[string]executor.Shared,
	dead *queue.DeadCounts, live map[string]idempotency.LiveCount, withLedger bool) *Stats {
	s := &Stats{
		Kinds:         []KindStats{},
		DLQ:           DLQStats{Total: dead.Total, ByReason: map[string]int{}},
		GeneratedAt:   now.UTC(),
		ScanCapped:    work.Capped,
		StrayMessages: work.Strays,
	}
	for reason, n := range dead.ByReason {
		s.DLQ.ByReason[reason] = n
	}
	var names []string
	for kind := range work.Kinds {
		names = append(names, kind)
	}
	for kind, ids := range members {
		if len(ids) > 0 {
			names = append(names, kind)
		}
	}
	for kind := range dead.ByKind {
		names = append(names, kind)
	}
	for kind := range live {
		names = append(names, kind)
	}
	slices.Sort(names)
	for _, kind := range slices.Compact(names) {
		ks := KindStats{Kind: kind, Workers: len(members[kind]), Dead: dead.ByKind[kind]}
		if kc := work.Kinds[kind]; kc != nil {
			ks.Served = kc.Consumer
			ks.Backlog = kc.Pending
			if !kc.Consumer {
				ks.Backlog = kc.Stored
			}
			ks.InFlight, ks.Redelivered = kc.InFlight, kc.Redelivered
			if !kc.Oldest.IsZero() {
				age := max(now.Sub(kc.Oldest), 0) // the server's clock may run ahead of ours
				ks.OldestAgeSeconds = math.Round(age.Seconds()*1000) / 1000
			}
		}
		if ks.Served {
			ks.Consumers = 1
		}
		if withLedger {
			lc := live[kind]
			ks.Retrying, ks.Running = &lc.Retrying, &lc.Running
		}
		rec, found := breakers[kind]
		kb := mergeBreaker(now, members[kind], rec, found)
		ks.Breaker, ks.BreakerScope = kb.state, kb.scope
		ks.BreakerCalls, ks.BreakerFailures, ks.BreakerFailureRate = kb.calls, kb.failures, kb.failureRate()
		ks.BreakerNextTrial, ks.BreakerNextTrialSeconds = kb.nextTrial, kb.nextTrialSeconds(now)
		ks.BreakerTrials, ks.BreakerTrialsOK = kb.trials, kb.trialsOK
		ks.BreakerSince, ks.BreakerReason, ks.BreakerBy = kb.since, kb.reason, kb.by
		ks.BreakerCutOff = kb.cutOff
		s.Kinds = append(s.Kinds, ks)
	}
	return s
}

// addScheduled sets the scheduled count of each kind of s that has a ledger count (Retrying
// set), adding a line for a kind it does not list: a kind whose jobs all wait in the ledger.
func addScheduled(s *Stats, scheduled map[string]int64) {
	for i := range s.Kinds {
		if s.Kinds[i].Retrying != nil {
			n := scheduled[s.Kinds[i].Kind]
			s.Kinds[i].Scheduled = &n
		}
	}
	for kind, n := range scheduled {
		if slices.ContainsFunc(s.Kinds, func(k KindStats) bool { return k.Kind == kind }) {
			continue
		}
		var zero1, zero2 int64
		s.Kinds = append(s.Kinds, KindStats{Kind: kind, Scheduled: &n, Retrying: &zero1, Running: &zero2})
	}
	slices.SortFunc(s.Kinds, func(a, b KindStats) int { return strings.Compare(a.Kind, b.Kind) })
}

// addPauses marks the paused kinds of s, adding a line for a paused kind it does not list.
func addPauses(s *Stats, paused map[string]fleet.ControlEntry) {
	for kind, p := range paused {
		i := slices.IndexFunc(s.Kinds, func(k KindStats) bool { return k.Kind == kind })
		if i < 0 {
			s.Kinds = append(s.Kinds, KindStats{Kind: kind})
			i = len(s.Kinds) - 1
		}
		at := p.At
		s.Kinds[i].Paused, s.Kinds[i].PausedBy, s.Kinds[i].PausedAt = true, p.By, &at
	}
	slices.SortFunc(s.Kinds, func(a, b KindStats) int { return strings.Compare(a.Kind, b.Kind) })
}
