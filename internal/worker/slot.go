package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
)

// slotWait bounds how long a job claimed ahead of its slot waits for it (design rule 16). The
// depth ahead is tuned so that the wait is about 20 ms; it is longer only when the kind's
// handlers slowed down at once or ignore their timeout (rule 21), and then the job goes back to
// the stream, where another worker may take it, rather than wait for them.
const slotWait = time.Second

// takeSlot takes the bulkhead slot for a's handler call and reports whether the call goes
// ahead. It does not when, by the time a slot is free, the attempt's context ended (a hard
// shutdown or a lost lease), slotWait passed, the kind was paused or the worker began to shut
// down, or the breaker is no longer as it was when the message was admitted: open, or
// half-open for a message admitted while it was closed (only trial permits may call then,
// design rules 37 and 38). Then the job's key is given back without counting the attempt,
// its message handed back (after the breaker's open time when open), and its reservation
// released.
func (k *kindRunner) takeSlot(ctx context.Context, a *attempt, log *slog.Logger) bool {
	slot := k.pipeline.TryAcquire()
	if !slot {
		wctx, cancel := context.WithTimeout(ctx, slotWait)
		stop := context.AfterFunc(k.runCtx, cancel)
		slot = k.pipeline.Acquire(wctx) == nil
		stop()
		cancel()
	}
	br := k.pipeline.Breaker()
	state := br.State()
	var retryIn time.Duration
	switch {
	case ctx.Err() != nil, !slot, k.runCtx.Err() != nil, k.paused():
	case state == executor.BreakerOpen:
		// It waits in the stream instead, unclaimed, no attempt spent (design rule 37).
		retryIn = max(time.Until(br.OpenUntil()), 0)
	case state == executor.BreakerHalfOpen && !a.j.trial:
	default:
		return true
	}
	k.pipeline.Putback(slot, a.j.trial)
	k.leases.settling(a)
	then := thenNakNow
	if retryIn > 0 {
		then = thenNak
	}
	k.settle(ctx, a, ending{out: idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateRetrying,
		Release: true, RetryIn: retryIn, Worker: k.w.cfg.ID}, then: then}, nil, log)
	if a.turn != nil && a.turn.marked {
		// Its last chance did not run: its mark must not condemn it (solo.go).
		k.unmark(a.j)
	}
	return false
}
