package worker

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
)

// attempt is one claimed attempt of a job.
type attempt struct {
	j      *job
	fence  int64 // the claim's fence (design rule 10)
	number int   // attempts on the key, this one included
	max    int   // the job's attempt budget
	cancel context.CancelCauseFunc
	lease  attemptLease // kept by the kind's leaseKeeper
	// ran is how the attempt's handler call ended (idempotency.AttemptFailed, ...), for its
	// row in the attempts table; "" while none ran.
	ran string
	// turn is set when the attempt is a last chance running alone (solo.go).
	turn *soloTurn
	// gate is the solo gate that counts the attempt's message as held until unhold. A
	// diverted job's attempt (dispatch.go) has none: it runs no handler, is never unheld, and
	// its message's count is settled by the dispatch.
	gate   *soloGate
	unheld sync.Once
	// The attempt is the value its handler's context carries (under attemptKey), for
	// CheckLease and IDFrom: keeper keeps its lease, ctx is its context before the value was
	// added, workerID names the worker. A diverted job's attempt runs no handler and has none.
	keeper   *leaseKeeper
	ctx      context.Context
	workerID string
}

// unhold tells the solo gate the attempt no longer holds its message: it ended, or it runs
// past its timeout and is left to lapse. Only the first call counts.
func (a *attempt) unhold() {
	a.unheld.Do(func() {
		a.gate.done(1)
		if a.turn != nil {
			close(a.turn.released)
		}
	})
}

// checkLease is CheckLease for the attempt: nil while its lease is known to hold.
func (a *attempt) checkLease() error {
	a.keeper.expire(a)
	if a.ctx.Err() != nil {
		return context.Cause(a.ctx)
	}
	return nil
}

// ledgerLease names the attempt's claim for the ledger.
func (a *attempt) ledgerLease() idempotency.Lease {
	return idempotency.Lease{Kind: a.j.env.Kind, Key: a.j.env.Key, Fence: a.fence}
}

// start runs the attempt of a claimed job in its own goroutine. sent is when the claim
// statement was sent: the lease holds from then (design rule 29); answered was read after
// Postgres answered (leaseKeeper.register).
func (k *kindRunner) start(j *job, res idempotency.ClaimResult, sent, answered stamp, turn *soloTurn) {
	a, ctx := k.newAttempt(j, res, turn)
	k.leases.register(a, sent, answered)
	k.attempts.Go(func() {
		defer func() {
			k.leases.unregister(a)
			a.cancel(nil)
			a.unhold()
		}()
		k.run(ctx, a)
	})
}

// newAttempt returns the attempt of a claimed job and the context its handler runs in: ended
// by a hard shutdown or a lost lease (a.cancel), it also carries the worker's id and the
// lease check behind CheckLease.
func (k *kindRunner) newAttempt(j *job, res idempotency.ClaimResult, turn *soloTurn) (*attempt, context.Context) {
	actx, cancel := context.WithCancelCause(k.hardCtx)
	a := &attempt{j: j, fence: res.Fence, number: res.Attempts, cancel: cancel, turn: turn, gate: k.w.gate,
		keeper: k.leases, ctx: actx, workerID: k.w.cfg.ID}
	return a, context.WithValue(actx, attemptKey{}, a)
}

// run runs one claimed attempt, settles its admission (telling the breaker what the
// downstream did) and settles its outcome.
func (k *kindRunner) run(ctx context.Context, a *attempt) {
	settled := false
	defer func() {
		if !settled {
			k.pipeline.Release(1, a.j.trial) // no handler call was made
		}
	}()
	j := a.j
	policy := k.pipeline.Policy()
	maxAttempts, timeout := policy.MaxAttempts, policy.Timeout // not policy itself: the closure below would move it to the heap
	if j.env.MaxAttempts > 0 {
		maxAttempts = j.env.MaxAttempts
	}
	a.max = maxAttempts
	log := jobLogger(k.log, slog.String("job_id", j.env.ID), slog.String("key", j.env.Key), slog.Int("attempt", a.number))

	if a.number > maxAttempts {
		// Earlier attempts ended without an outcome: their workers died, froze or lost
		// Postgres, perhaps because of another job they held. The job gets one more attempt,
		// alone in its worker (solo.go).
		switch {
		case a.number == maxAttempts+1 && a.turn != nil:
			log.Info("last chance: attempt budget spent by attempts that ended without an outcome; one more attempt, alone")
		case a.number == maxAttempts+1:
			// Handed on, the message keeps its bulkhead reservation.
			settled = k.handToRunAlone(ctx, a, log)
			return
		default:
			k.leases.settling(a)
			k.settle(ctx, a, k.giveUp(a, a.number-1, "attempt budget spent: its attempts ended without an outcome "+
				"(their workers died, froze or could not reach Postgres to record one), and its last chance, run alone, was lost too"), nil, log)
			return
		}
	}

	// Claimed ahead of its slot (design rule 16), the job waits for one here.
	if !k.takeSlot(ctx, a, log) {
		settled = true // takeSlot gave the reservation back
		return
	}
	att := Attempt{Envelope: j.env, Number: a.number, MaxAttempts: maxAttempts, Fence: a.fence}
	start := time.Now()
	var tx pgx.Tx // set while a TxHandler's transaction is open
	defer func() {
		if tx != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	var over struct { // one allocation: the overrun callback shares it
		sync.Mutex
		returned bool
		overdue  func()
	}
	result, v := executor.Execute(ctx, k.pipeline, func() {
		over.Lock()
		defer over.Unlock()
		if over.returned {
			return
		}
		over.overdue = k.metrics.Overrun(k.kind.Name)
		k.leases.leave(a)
		a.unhold() // its message is left to lapse: a last chance waiting elsewhere may run
		k.w.gate.addOverrun(1)
		log.Warn("handler still running past its timeout; its slot stays taken until it returns, and its lease is left to lapse so another worker can retry the job",
			"timeout", timeout, "running_for", time.Since(start).Round(time.Millisecond))
	}, func(ctx context.Context) ([]byte, error) {
		if k.kind.TxHandler == nil {
			return k.kind.Handler(ctx, att)
		}
		var err error
		if tx, err = k.ledger.Begin(ctx); err != nil {
			return nil, err
		}
		return k.kind.TxHandler(ctx, tx, att)
	})
	crashAt(crashAfterCall, j.env.Key, a.number) // a no-op unless built with -tags chaos (testhook.go)
	over.Lock()
	over.returned = true
	if over.overdue != nil {
		over.overdue()
		k.w.gate.addOverrun(-1)
	}
	over.Unlock()
	k.metrics.Attempt(k.kind.Name, resultClass(v), time.Since(start))
	k.pipeline.Finish(v, a.j.trial)
	settled = true
	if v.Class != executor.Succeeded && tx != nil {
		// A failed attempt's own writes are undone before its outcome is written.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		tx = nil
	}
	a.ran = attemptOutcome(v)
	k.leases.settling(a)
	if executor.DownstreamFailure(v) && a.number >= maxAttempts {
		k.awaitOutage(ctx, a.number)
	}
	e := k.decide(a, v, result, maxAttempts, rand.Float64())
	if e.then == thenNothing {
		log.Warn("lease lost during the attempt; writing nothing, not acking (another worker takes the job over)")
	}
	committedTx := tx
	tx = nil
	if !k.settle(ctx, a, e, committedTx, log) && a.turn != nil && a.turn.marked {
		// The run alone ended without an outcome of its own (its lease lost, its commit given
		// up): that says nothing about the job, so its mark must not condemn it.
		k.unmark(j)
	}
}

// outageSettle is how long a last attempt that failed downstream waits, while the breaker sees
// no outage, before it is decided: at an outage's onset the failures of the other attempts of
// the same moment (this worker's and, a report interval later, the fleet's) are still on their
// way, and the breaker opens a moment later (design rule 38). The message stays in progress
// meanwhile; a lone job's death waits this long.
const outageSettle = time.Second

// awaitOutage waits up to outageSettle, while the breaker sees no outage for a job that made
// own attempts, for it to see one.
func (k *kindRunner) awaitOutage(ctx context.Context, own int) {
	br := k.pipeline.Breaker()
	for deadline := time.Now().Add(outageSettle); !br.Outage(own) && time.Now().Before(deadline); {
		sleep(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return
		}
	}
}

// decide turns an attempt's verdict into what is committed and what follows it. jitter in
// [0, 1) draws the backoff's delay.
func (k *kindRunner) decide(a *attempt, v executor.Verdict, result []byte, maxAttempts int, jitter float64) ending {
	out := idempotency.Outcome{Lease: a.ledgerLease(), Attempt: a.ran, Worker: k.w.cfg.ID}
	switch v.Class {
	case executor.Succeeded:
		out.State, out.Result = idempotency.StateSucceeded, result
		return ending{out: out, then: thenAck}
	case executor.Abandoned:
		if errors.Is(v.Err, idempotency.ErrLeaseLost) {
			return ending{then: thenNothing}
		}
		// Shutdown deadline: give the key back without counting the attempt, redeliver now.
		out.State, out.Release = idempotency.StateRetrying, true
		return ending{out: out, then: thenNakNow}
	case executor.Dead:
		out.State, out.Reason, out.Error = idempotency.StateDead, v.Reason, v.Err.Error()
		return ending{out: out, then: thenDeadLetter, attempts: a.number}
	}
	out.State, out.Error = idempotency.StateRetrying, v.Err.Error()
	out.RetryIn = k.pipeline.Policy().Backoff.RetryDelay(a.number, v, jitter)
	if br := k.pipeline.Breaker(); executor.DownstreamFailure(v) && br.Outage(a.number) &&
		(br.State() != executor.BreakerClosed || a.number >= maxAttempts) {
		// An outage spends no attempts and dead-letters nothing (design rule 38): while the
		// breaker is open or half-open, perhaps because of this very failure, and on a last
		// attempt while the window's failure rate is at the threshold, the attempt is given
		// back. Retry once the breaker lets calls through.
		out.Release = true
		out.RetryIn = max(out.RetryIn, time.Until(br.OpenUntil()))
		return ending{out: out, then: thenNak}
	}
	if a.number >= maxAttempts {
		return k.giveUp(a, a.number, v.Err.Error())
	}
	return ending{out: out, then: thenNak}
}

// giveUp is the ending of a job whose attempts are spent: it falls back to the kind's
// fallback kind when there is one (and the job is not itself a fallback), else it dies with
// reason max_attempts.
func (k *kindRunner) giveUp(a *attempt, attempts int, msg string) ending {
	out := idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateDead, Error: msg, Attempt: a.ran, Worker: k.w.cfg.ID}
	if k.kind.Policy.Fallback != "" && a.j.env.FallbackOf == "" {
		out.Reason, out.FallbackTo = executor.ReasonFellBack, FallbackID(a.j.env.ID)
		return ending{out: out, then: thenFallBack, attempts: attempts}
	}
	out.Reason = executor.ReasonMaxAttempts
	return ending{out: out, then: thenDeadLetter, attempts: attempts}
}

// handToRunAlone gives the key back without counting the attempt and hands the message, with
// its bulkhead reservation, to runAlone: the job's last chance is claimed again once it can
// run alone. A claim held while waiting would be lost with the worker if the job running
// alone before it crashed it. It reports whether the message was handed on.
func (k *kindRunner) handToRunAlone(ctx context.Context, a *attempt, log *slog.Logger) bool {
	k.leases.settling(a)
	out := idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateRetrying, Release: true, Worker: k.w.cfg.ID}
	if _, ok := k.commitOutcome(ctx, a, out, nil, log); !ok {
		return false // the lease lapses and the message is redelivered
	}
	k.w.gate.add(1) // runAlone's; the attempt's own is settled when it returns
	k.attempts.Go(func() { k.runAlone(k.runCtx, a.j) })
	return true
}

// attemptOutcome names how an attempt ended, for the attempts table.
func attemptOutcome(v executor.Verdict) string {
	switch {
	case v.Class == executor.Succeeded:
		return idempotency.AttemptSucceeded
	case v.Class == executor.Abandoned:
		return idempotency.AttemptReleased
	case v.Timeout:
		return idempotency.AttemptTimedOut
	}
	return idempotency.AttemptFailed
}

// resultClass names an attempt's verdict for the attempts metric.
func resultClass(v executor.Verdict) string {
	switch {
	case v.Class == executor.Succeeded:
		return "success"
	case v.Class == executor.Abandoned:
		return "abandoned"
	case v.Class == executor.Dead:
		return "permanent"
	case v.Timeout:
		return "timeout"
	}
	return "retry"
}
