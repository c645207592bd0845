package worker

import (
	"cmp"
	"context"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// claimAndDispatch claims the keys of a pulled group in one statement (design rule 9) and
// dispatches each job: a claimed job starts an attempt, or with divert (breaker open past
// fallback_after) is handed to the fallback kind without one; a job whose key is finished is
// settled as a duplicate; a busy key is handed back for later; a malformed job, or one whose
// key another job used with another payload, is dead-lettered. A message on its last
// delivery goes to runAlone instead (unless turn says this is its turn alone already).
//
// Each job holds one bulkhead reservation (none in divert mode), released here or when its
// attempt ends. Every job in js is counted as held by the solo gate; claimAndDispatch settles
// the count of those it neither started nor handed on. It returns the number of attempts
// started, and the claim's error: then every job was handed back for redelivery.
func (k *kindRunner) claimAndDispatch(ctx context.Context, js []*job, divert bool, turn *soloTurn) (started int, err error) {
	// The jobs of one call come from one admission: their permits are trials or not alike.
	release := func(n int) { k.pipeline.Release(n, len(js) > 0 && js[0].trial) }
	if divert {
		release = func(int) {}
	}
	passed := 0 // started, or handed to runAlone: they settle their own count
	defer func() { k.w.gate.done(len(js) - passed) }()
	reqs := make([]idempotency.ClaimRequest, 0, len(js))
	good := make([]*job, 0, len(js))
	for _, j := range js {
		if turn == nil && !divert && j.decodeErr == nil && k.lastDelivery(j) {
			passed++
			k.attempts.Go(func() { k.runAlone(k.runCtx, j) })
			continue
		}
		crashAt(crashBeforeClaim, j.env.Key, 0) // a no-op unless built with -tags chaos (testhook.go)
		if err := storable(j); err != nil {
			// Never sent to the ledger, so that it cannot fail the claim of its group (design
			// rule 28).
			k.deadLetter(ctx, j, death{reason: executor.ReasonMalformed, msg: err.Error()}, false)
			release(1)
			continue
		}
		if divert && j.env.FallbackOf != "" {
			_ = j.msg.Nak(k.kind.Policy.FallbackAfter) // a fallback job never falls back again: it waits
			continue
		}
		good = append(good, j)
		reqs = append(reqs, idempotency.ClaimRequest{
			JobID:       j.env.ID,
			Kind:        j.env.Kind,
			Key:         j.env.Key,
			PayloadHash: j.env.PayloadHash(),
			EnqueuedAt:  j.env.EnqueuedAt,
			FallbackOf:  j.env.FallbackOf,
			Lease:       k.leases.times.stored(),
		})
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	sent := k.leases.clock.Stamp()
	results, err := k.ledger.Claim(ctx, reqs)
	k.metrics.Ledger("claim", sent.mono)
	if err != nil {
		for _, j := range good {
			_ = j.msg.Nak(claimFailedNak)
		}
		release(len(good))
		return 0, err
	}
	// answered is read after the claim, once for a run of claimed jobs, and again after
	// anything else the loop did (a solo turn's mark, a dead-letter copy, a nak), so that
	// only CPU work lies between it and a lease's registration: a suspend there would not be
	// seen when the lease's timer is armed (stamp.at).
	var answered stamp
	stale := true
	fresh := func() stamp {
		if stale {
			answered, stale = k.leases.clock.Stamp(), false
		}
		return answered
	}
	// Duplicates are recorded first and acked after: commit, then ack (design rule 3).
	type settle struct {
		j      *job
		reason string // "" acks, else terms with this reason
	}
	var (
		records []idempotency.Record
		settles []settle
	)
	for i, res := range results {
		j := good[i]
		switch res.Status {
		case idempotency.Claimed:
			if divert {
				// Settled beside the loop, as an attempt is, kept in progress and its lease
				// extended while the commit is retried (design rule 30); no handler runs.
				a := &attempt{j: j, fence: res.Fence, number: res.Attempts, cancel: func(error) {}}
				k.leases.register(a, sent, fresh())
				k.leases.settling(a)
				k.attempts.Go(func() {
					defer k.leases.unregister(a)
					k.settle(k.hardCtx, a, ending{
						out: idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateDead, Reason: executor.ReasonFellBack,
							Error: "breaker open longer than fallback_after", FallbackTo: FallbackID(j.env.ID), Worker: k.w.cfg.ID},
						then: thenFallBack,
					}, nil, k.log.With("job_id", j.env.ID, "key", j.env.Key))
				})
				continue
			}
			if turn != nil && turn.mark != nil {
				stale = true // the mark and, if it fails, the give-back are round trips
				if err := turn.mark(ctx); err != nil {
					k.giveBack(ctx, j, res) // not run, not marked: its deliveries running out publish it again
					_ = j.msg.Nak(claimFailedNak)
					release(1)
					continue
				}
			}
			k.start(j, res, sent, fresh(), turn)
			passed++
			started++
			continue
		case idempotency.Busy:
			_ = j.msg.Nak(res.Wait)
		case idempotency.AlreadySucceeded:
			if res.Owner != j.env.ID {
				records = append(records, record(j, idempotency.StateSucceeded, "", res.Owner))
			}
			settles = append(settles, settle{j: j})
		case idempotency.AlreadyDead:
			if res.Owner == j.env.ID {
				// Our own dead job redelivered: make sure its DLQ copy exists, then term.
				k.ensureDeadLettered(ctx, j, res)
				break
			}
			records = append(records, record(j, idempotency.StateDead, res.Reason, res.Owner))
			settles = append(settles, settle{j: j, reason: res.Reason})
		case idempotency.PayloadMismatch:
			k.deadLetter(ctx, j, death{reason: executor.ReasonKeyReused,
				msg: "idempotency key " + j.env.Key + " was used by job " + res.Owner + " with a different payload"}, false)
		case idempotency.Invalid:
			// A request the ledger could not store (it checks too, design rule 28): never retried.
			k.deadLetter(ctx, j, death{reason: executor.ReasonMalformed, msg: cmp.Or(res.Reason, "the job's id, kind or key cannot be stored")}, false)
		default:
			k.log.Error("unknown claim status; handing the message back", "status", res.Status, "job_id", j.env.ID)
			_ = j.msg.Nak(claimFailedNak)
		}
		stale = true
		release(1)
	}
	if err := k.ledger.AddRecords(ctx, records); err != nil {
		k.log.Warn("record duplicate jobs; they will be redelivered", "err", err, "count", len(records))
		for _, st := range settles {
			_ = st.j.msg.Nak(claimFailedNak)
		}
		return started, nil
	}
	for _, st := range settles {
		if st.reason == "" {
			_ = st.j.msg.Ack()
		} else {
			_ = st.j.msg.Term(st.reason)
		}
		k.metrics.Finished(k.kind.Name, "duplicate", st.j.env.EnqueuedAt)
	}
	return started, nil
}

// storable reports why a job cannot be claimed (nil when it can): a message that failed to
// decode, or whose id, kind or key the ledger could not store.
func storable(j *job) error {
	if j.decodeErr != nil {
		return j.decodeErr
	}
	if err := queue.ValidateID(j.env.ID); err != nil {
		return err
	}
	if err := queue.ValidateKind(j.env.Kind); err != nil {
		return err
	}
	return queue.ValidateKey(j.env.Key)
}

func record(j *job, st idempotency.State, reason, owner string) idempotency.Record {
	return idempotency.Record{
		JobID: j.env.ID, Kind: j.env.Kind, Key: j.env.Key, State: st, Reason: reason,
		DuplicateOf: owner, EnqueuedAt: j.env.EnqueuedAt,
	}
}

// giveBack gives a claimed key back without counting the attempt, when the job is not run
// after all. If the write fails, the lease lapses.
func (k *kindRunner) giveBack(ctx context.Context, j *job, res idempotency.ClaimResult) {
	out := idempotency.Outcome{Lease: idempotency.Lease{Kind: j.env.Kind, Key: j.env.Key, Fence: res.Fence},
		State: idempotency.StateRetrying, Release: true, Worker: k.w.cfg.ID}
	if r := k.w.committer.finish(ctx, out, nil); r.err != nil {
		k.log.Warn("give a claimed key back failed; its lease lapses", "job_id", j.env.ID, "err", r.err)
	}
}
