package worker

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

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
func (k *kindRunner) commitPatience() time.Duration { return max(2*time.Minute, 4*k.kind.AckWait) }

// settle is the one settle path of an attempt (design rule 30): it commits e.out (with
// retries; a TxHandler's success in its transaction tx), and only once the commit applied
// acks, naks, dead-letters or falls back. An outcome that could not be stored is replaced by
// its substitute, and the job is dead-lettered (design rule 28).
func (k *kindRunner) settle(ctx context.Context, a *attempt, e ending, tx pgx.Tx, log *slog.Logger) {
	if e.then == thenNothing {
		return
	}
	var (
		stored idempotency.Outcome
		ok     bool
	)
	if tx != nil {
		stored, ok = k.commitTx(ctx, a, tx, e.out, log)
		if !ok {
			return
		}
		if stored.Release {
			e = ending{out: stored, then: thenNakNow}
		}
	} else {
		var res commitRes
		res, ok = k.commitOutcome(ctx, a, e.out, log)
		if !ok {
			return
		}
		stored = res.stored
		if res.substituted {
			log.Error("outcome could not be stored; the job is dead-lettered with a substitute outcome", "error", stored.Error)
			e = ending{out: stored, then: thenDeadLetter, attempts: e.attempts}
		}
	}
	j := a.j
	switch e.then {
	case thenAck:
		log.Debug("job succeeded")
		k.metrics.Finished(k.kind.Name, "succeeded", j.env.EnqueuedAt)
		if k.w.cfg.Hooks.SkipAck != nil && k.w.cfg.Hooks.SkipAck(j.env) {
			return
		}
		if err := j.msg.Ack(); err != nil {
			log.Warn("ack after commit failed; the redelivery will find the key succeeded", "err", err)
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
}

// commitOutcome commits out through the group commit and reports what was stored, and
// whether anything may follow: false when the lease was lost (no ack, no nak: the new owner
// finishes the job) or the commit was given up. A commit that fails (Postgres unreachable, a
// timeout) is retried with backoff while the attempt stays registered, its lease extended
// and its message kept in progress, until it applies, the fence is found lost, the worker
// shuts down hard, or commitPatience passes (design rule 30). It is always tried at least
// once, even during a hard shutdown (a released key must be given back).
func (k *kindRunner) commitOutcome(ctx context.Context, a *attempt, out idempotency.Outcome, log *slog.Logger) (commitRes, bool) {
	giveUpAt := time.Now().Add(k.commitPatience())
	wait := 50 * time.Millisecond
	for try := 1; ; try++ {
		cctx, cancel := detached(ctx)
		res := k.w.committer.finish(cctx, out)
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
		if stop.Err() != nil || time.Now().After(giveUpAt) {
			k.leases.drop(a)
			log.Error("commit outcome failed; giving up (the message is no longer kept in progress, and the job runs again once its lease lapses)",
				"err", res.err, "state", out.State, "tries", try)
			return res, false
		}
		if try == 1 {
			log.Warn("commit outcome failed; retrying while the message is kept in progress", "err", res.err, "state", out.State)
		}
		t := time.NewTimer(wait + rand.N(wait))
		select {
		case <-t.C:
		case <-stop.Done():
			t.Stop()
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// commitTx writes a TxHandler's success in the handler's transaction and commits both (design
// rule 13). If that fails the handler's writes did not commit (or their fate is unknown): the
// key is given back without counting the attempt, through the group commit with retries, and
// the job runs again (its attempt failed: design rule 0 (a)). If the transaction did commit
// after all, that release finds the key succeeded and applies nothing, and the redelivery
// acks it as done. It reports what was stored and whether anything may follow.
func (k *kindRunner) commitTx(ctx context.Context, a *attempt, tx pgx.Tx, out idempotency.Outcome, log *slog.Logger) (idempotency.Outcome, bool) {
	wctx, cancel := detached(ctx)
	defer cancel()
	start := time.Now()
	applied, err := k.ledger.FinishTx(wctx, tx, []idempotency.Outcome{out})
	k.metrics.Ledger("finish", start)
	if err == nil && !applied[0] {
		_ = tx.Rollback(wctx)
		log.Warn("lease lost before commit; the handler's writes are rolled back, not acking (another worker finishes the job)")
		return out, false
	}
	if err == nil {
		err = tx.Commit(wctx)
	}
	if err == nil {
		return out, true
	}
	_ = tx.Rollback(wctx)
	log.Warn("the handler's transaction did not commit; giving the key back to run the job again", "err", err)
	rel := idempotency.Outcome{Lease: out.Lease, State: idempotency.StateRetrying, Release: true,
		Error: "the handler's transaction did not commit: " + err.Error(), Attempt: idempotency.AttemptReleased, Worker: out.Worker}
	res, ok := k.commitOutcome(ctx, a, rel, log)
	return res.stored, ok
}
