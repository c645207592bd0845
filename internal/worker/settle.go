package worker

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
)

// then is what follows an attempt's committed outcome.
type then int

const (
	// thenNothing: the lease was lost; nothing is written and the message is not acked (the
	// new owner finishes the job).
	thenNothing then = iota
	thenAck
	// thenNak: redeliver after the outcome's RetryIn.
	thenNak
	// thenNakNow: the attempt was given back unfinished (shutdown): redeliver at once.
	thenNakNow
	thenDeadLetter
	thenFallBack
)

// ending is an attempt's outcome and what follows its commit.
type ending struct {
	out  idempotency.Outcome
	then then
	// attempts counts the job's attempts, for its dead-letter copy.
	attempts int
}

// commitPatience bounds how long a failing commit is retried while the message is kept in
// progress: a worker cut off from Postgres for longer gives the job up (it runs again
// elsewhere, which design rule 0 (b) allows).
func (k *kindRunner) commitPatience() time.Duration {
	return max(2*time.Minute, 4*k.kind.Policy.AckWait)
}

// settle is the one settle path of an attempt (design rule 30): it commits e.out (with
// retries; a TxHandler's success in its transaction tx), and only once the commit applied
// acks, naks, dead-letters or falls back. An outcome that could not be stored is replaced by
// its substitute, and the job is dead-lettered (design rule 28).
func (k *kindRunner) settle(ctx context.Context, a *attempt, e ending, tx pgx.Tx, log *slog.Logger) (committed bool) {
	if e.then == thenNothing {
		return false
	}
	var (
		stored idempotency.Outcome
		ok     bool
		// acked: the group commit acked the message with the commit (commitReq.ack).
		acked  bool
		ackErr error
	)
	if tx != nil {
		e, ok = k.commitTx(ctx, a, tx, e, log)
		if !ok {
			return false
		}
		stored = e.out
	} else {
		var ack func() error
		if e.then == thenAck {
			ack = k.ackFunc(a.j)
		}
		var res commitRes
		res, ok = k.commitOutcome(ctx, a, e.out, ack, log)
		if !ok {
			return false
		}
		stored = res.stored
		if res.substituted {
			log.Error("outcome could not be stored; the job is dead-lettered with a substitute outcome", "error", stored.Error)
			e = ending{out: stored, then: thenDeadLetter, attempts: e.attempts}
		}
		acked, ackErr = res.acked, res.ackErr
	}
	j := a.j
	switch e.then {
	case thenAck:
		log.Debug("job succeeded")
		k.metrics.Finished(k.kind.Name, "succeeded", j.env.EnqueuedAt)
		if !acked {
			ackErr = k.ackFunc(j)()
		}
		if ackErr != nil {
			log.Warn("ack after commit failed; the redelivery will find the key succeeded", "err", ackErr)
		}
	case thenNak:
		log.Info("attempt failed; will retry", "error", stored.Error, "retry_in", stored.RetryIn.Round(time.Millisecond),
			"attempt_counted", !stored.Release)
		_ = j.msg.Nak(stored.RetryIn)
	case thenNakNow:
		_ = j.msg.Nak(0)
	case thenDeadLetter:
		dctx, cancel := detached(ctx)
		defer cancel()
		k.deadLetter(dctx, j, death{reason: stored.Reason, msg: stored.Error, attempts: e.attempts}, true)
	case thenFallBack:
		dctx, cancel := detached(ctx)
		defer cancel()
		k.fallBack(dctx, j, stored, log)
	}
	return true
}

// ackFunc acks j's message after its success committed (or, under the test hook SkipAck, drops
// the ack as if it were lost).
func (k *kindRunner) ackFunc(j *job) func() error {
	return func() error {
		if k.w.cfg.Hooks.SkipAck != nil && k.w.cfg.Hooks.SkipAck(j.env) {
			return nil
		}
		return j.msg.Ack()
	}
}

// commitOutcome commits out through the group commit and reports what was stored, and
// whether anything may follow: false when the lease was lost (no ack, no nak: the new owner
// finishes the job) or the commit was given up. A commit that fails (Postgres unreachable, a
// timeout) is retried with backoff while the attempt stays registered, its lease extended
// and its message kept in progress, until it applies, the fence is found lost, the worker
// shuts down hard and the attempt's lease no longer holds, or commitPatience passes (design
// rule 30). A handler that returned before the hard shutdown keeps its chance: its commit is
// retried for as long as its lease holds (a blip shorter than the lease during a shutdown
// must not run the job again). It is always tried at least once (a released key must be given
// back).
func (k *kindRunner) commitOutcome(ctx context.Context, a *attempt, out idempotency.Outcome, ack func() error, log *slog.Logger) (commitRes, bool) {
	giveUpAt := time.Now().Add(k.commitPatience())
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		cctx, cancel := detached(ctx)
		res := k.w.committer.finish(cctx, out, ack)
		cancel()
		switch {
		case res.err == nil && res.applied:
			if try > 1 {
				log.Info("outcome committed after retries", "tries", try, "state", res.stored.State)
			}
			return res, true
		case res.err == nil:
			log.Warn("lease lost before commit; writing nothing, not acking (another worker finishes the job)", "state", out.State)
			return res, false
		}
		stop := k.hardCtx
		if stop == nil {
			stop = context.Background()
		}
		if stop.Err() != nil && !k.leases.holds(a, k.leases.clock.Stamp()) || time.Now().After(giveUpAt) {
			k.leases.drop(a)
			log.Error("commit outcome failed; giving up (the message is no longer kept in progress, and the job runs again once its lease lapses)",
				"err", res.err, "state", out.State, "tries", try)
			return res, false
		}
		if try == 1 {
			log.Warn("commit outcome failed; retrying while the message is kept in progress", "err", res.err, "state", out.State)
		}
		time.Sleep(wait + rand.N(wait)) // not cut short by the shutdown: the lease may still hold
		wait = min(2*wait, 2*time.Second)
	}
}

// commitTx writes a TxHandler's success in the handler's transaction and commits both (design
// rule 13). If that fails, the handler's writes did not commit (or their fate is unknown), and
// the job must run again: the attempt failed (design rule 0 (a)), whatever the cause (the
// COMMIT refused or unanswered, a deferred constraint, a statement the handler let fail, the
// session killed while the handler worked). It counts, is retried with backoff, and the job
// dies after max_attempts; its ending is committed through the group commit with retries. If
// the transaction did commit after all, that ending finds the key succeeded and applies
// nothing, and the redelivery acks the job as done. It reports what was stored and whether
// anything may follow.
func (k *kindRunner) commitTx(ctx context.Context, a *attempt, tx pgx.Tx, e ending, log *slog.Logger) (ending, bool) {
	wctx, cancel := detached(ctx)
	defer cancel()
	start := time.Now()
	applied, err := k.ledger.FinishTx(wctx, tx, []idempotency.Outcome{e.out})
	k.metrics.Ledger("finish", start)
	if err == nil && !applied[0] {
		_ = tx.Rollback(wctx)
		log.Warn("lease lost before commit; the handler's writes are rolled back, not acking (another worker finishes the job)")
		return e, false
	}
	if err == nil {
		err = tx.Commit(wctx)
	}
	if err == nil {
		return e, true
	}
	_ = tx.Rollback(wctx)
	failed := k.txFailed(a, err, rand.Float64())
	log.Warn("the handler's transaction did not commit; the attempt failed", "err", err,
		"retry_in", failed.out.RetryIn.Round(time.Millisecond))
	res, ok := k.commitOutcome(ctx, a, failed.out, nil, log)
	failed.out = res.stored
	return failed, ok
}

// txFailed is the ending of an attempt whose handler succeeded but whose transaction did not
// commit (see commitTx): a counted failure.
func (k *kindRunner) txFailed(a *attempt, err error, jitter float64) ending {
	err = fmt.Errorf("the handler's transaction did not commit: %w", err)
	v := executor.Verdict{Class: executor.Retry, Err: err}
	out := idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateRetrying, Error: err.Error(),
		Attempt: idempotency.AttemptFailed, Worker: k.w.cfg.ID, RetryIn: k.pipeline.Policy().Backoff.RetryDelay(a.number, v, jitter)}
	if a.number >= a.max {
		return k.giveUp(a, a.number, err.Error())
	}
	return ending{out: out, then: thenNak}
}
