package levee

import (
	"context"
	"errors"
	"math"
	"slices"
	"time"

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
	// with running or retrying keys in the ledger, or with dead jobs.
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
	// serves it, or an operator captures them (Client.CaptureOrphans).
	Served bool `json:"served"`
}

// Orphan reports whether no worker serves the kind: it has no consumer and no live worker.
func (k KindStats) Orphan() bool { return !k.Served && k.Workers == 0 }

// DLQStats counts the dead-letter queue.
type DLQStats struct {
	Total int `json:"total"`
	// ByReason counts entries by reason ("unknown" for a copy without one).
	ByReason map[string]int `json:"by_reason"`
}

// Stats returns a snapshot of the namespace's queues. It needs only NATS; with a database it
// adds the ledger's running and retrying counts, read by one grouped query that scans the
// ledger's keys table (fine for an operator's look every few seconds, not for a hot path).
// Streams that do not exist yet count as empty; Stats creates nothing.
//
// Its cost grows with the dead-letter queue (the headers of every entry are read) and, only
// when the work stream holds jobs that no consumer accounts for, with those jobs (one subject
// each, up to a cap: see ScanCapped).
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	if err := c.q.CheckJetStream(ctx); err != nil {
		return nil, err
	}
	if err := c.checkSetup(ctx); err != nil {
		return nil, err
	}
	work, err := c.q.WorkStats(ctx, 0)
	if errors.Is(err, queue.ErrNoStream) {
		work, err = &queue.WorkStats{}, nil
	}
	if err != nil {
		return nil, err
	}
	fleet, err := c.q.FleetMembers(ctx)
	if err != nil {
		return nil, err
	}
	dead, err := c.q.DeadStats(ctx)
	if errors.Is(err, queue.ErrNoStream) {
		dead, err = &queue.DeadCounts{}, nil
	}
	if err != nil {
		return nil, err
	}
	var live map[string]idempotency.LiveCount
	if c.ledger != nil {
		if live, err = c.ledger.LiveCounts(ctx); err != nil {
			return nil, err
		}
	}
	return buildStats(time.Now(), work, fleet, dead, live, c.ledger != nil), nil
}

// buildStats merges the sources of a snapshot taken at now. withLedger says whether live holds
// the ledger's counts (possibly none) or there is no ledger.
func buildStats(now time.Time, work *queue.WorkStats, fleet map[string][]string, dead *queue.DeadCounts,
	live map[string]idempotency.LiveCount, withLedger bool) *Stats {
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
	for kind, ids := range fleet {
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
		ks := KindStats{Kind: kind, Workers: len(fleet[kind]), Dead: dead.ByKind[kind]}
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
		s.Kinds = append(s.Kinds, ks)
	}
	return s
}
