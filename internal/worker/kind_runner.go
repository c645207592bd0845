package worker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// kindRunner serves one kind: its pull loop, its attempts and its heartbeats.
type kindRunner struct {
	w        *Worker
	kind     Kind
	pipeline *executor.Pipeline
	puller   *queue.Puller
	hardCtx  context.Context
	runCtx   context.Context // Run's: ends when the worker stops pulling
	attempts *sync.WaitGroup

	mu       sync.Mutex
	inflight map[*attempt]struct{}

	pause pauseGate // an operator's pause (control.go)
}

// attempt is one running attempt, registered for heartbeats.
type attempt struct {
	d      *queue.Delivery
	lease  idempotency.Lease
	cancel context.CancelCauseFunc
	// unbeaten stops heartbeats: the handler ran past its timeout ignoring its context, or
	// the lease was lost. The lease and AckWait then lapse and another worker takes the job
	// over (fence + 1), so a hung handler cannot hold a job forever.
	unbeaten atomic.Bool
	// ran is how the attempt's handler call ended (idempotency.AttemptFailed, ...), for its
	// row in the attempts table; "" while none ran.
	ran string
	// turn is set when the attempt is a last chance running alone (solo.go).
	turn *soloTurn
	// unhold tells the solo gate the attempt no longer holds its message: it ended, or it
	// runs past its timeout and is left to lapse. Only the first call counts.
	unhold func()
}

// errorPause is how long the pull loop waits after a failing pull or claim.
const errorPause = 2 * time.Second

// maxClaimsInFlight bounds the pulled groups one kind's pull loop claims at once.
const maxClaimsInFlight = 4

// ledgerTimeout bounds one ledger round trip of the pull loop.
const ledgerTimeout = 10 * time.Second

// claimFailedNak is the redelivery delay for messages pulled while the ledger is unreachable.
const claimFailedNak = 5 * time.Second

func (k *kindRunner) logger() *slog.Logger { return k.w.log.With("kind", k.kind.Name) }

func (k *kindRunner) pullLoop(ctx context.Context) {
	log := k.logger()
	// Claims run beside the pulls: while one pulled group is being claimed, the loop admits and
	// pulls the next, up to claimsInFlight groups at once. The first failed claim stops the
	// pulling until the ledger answers again.
	var (
		claims  = make(chan struct{}, k.claimsInFlight())
		pending sync.WaitGroup
		mu      sync.Mutex
		failed  error
	)
	claimErr := func() error {
		mu.Lock()
		defer mu.Unlock()
		return failed
	}
	defer pending.Wait()
	for ctx.Err() == nil {
		if err := claimErr(); err != nil {
			pending.Wait()
			log.Warn("ledger unavailable; messages handed back for redelivery; pulling stops until it answers", "err", err)
			k.waitLedger(ctx)
			mu.Lock()
			failed = nil
			mu.Unlock()
			continue
		}
		k.waitResumed(ctx)
		n, err := k.pipeline.Admit(ctx, k.w.cfg.MaxBatch)
		if err != nil {
			return
		}
		if k.paused() { // paused while admission waited
			k.pipeline.Release(n)
			continue
		}
		// A last chance waiting to run alone stops the pulls of every kind (solo.go).
		if !k.w.gate.enterPull(ctx) {
			k.pipeline.Release(n)
			return
		}
		got, err := k.puller.Fetch(ctx, n, k.w.cfg.FetchWait, func(ds []*queue.Delivery) {
			k.w.gate.add(len(ds))
			if err := claimErr(); ctx.Err() != nil || err != nil {
				// Pulled while shutting down, or the ledger just failed: hand them back.
				for _, d := range ds {
					_ = d.Nak(nakDelay(err))
				}
				k.pipeline.Release(len(ds))
				k.w.gate.done(len(ds))
				return
			}
			claims <- struct{}{}
			pending.Go(func() {
				defer func() { <-claims }()
				// The claim finishes even if shutdown starts meanwhile: a claimed key is then
				// run (and drained) rather than left leased for nobody.
				pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
				defer cancel()
				if err := k.process(pctx, ds); err != nil {
					mu.Lock()
					failed = cmp.Or(failed, err)
					mu.Unlock()
				}
			})
		})
		k.w.gate.done(1) // the pull itself; what it brought is counted by the claims
		k.pipeline.Pulled(n, got)
		if err != nil {
			log.Warn("pull failed; retrying", "err", err)
			sleep(ctx, errorPause)
		}
	}
}

// claimsInFlight is how many pulled groups the pull loop claims at once: one per MaxBatch of
// the kind's concurrency, from 1 to maxClaimsInFlight. A kind whose concurrency holds a
// single batch gains nothing from more (the next pull would find no free slot) and would
// split its claims into smaller statements.
func (k *kindRunner) claimsInFlight() int {
	return min(maxClaimsInFlight, max(1, k.pipeline.Policy().Concurrency/k.w.cfg.MaxBatch))
}

// waitLedger blocks until the ledger answers again (or ctx ends), backing off from 1s to 5s.
// Not pulling meanwhile keeps deliveries from being spent against MaxDeliver during an outage.
func (k *kindRunner) waitLedger(ctx context.Context) {
	wait := time.Second
	for {
		sleep(ctx, wait)
		if ctx.Err() != nil {
			return
		}
		pctx, cancel := context.WithTimeout(ctx, ledgerTimeout)
		err := k.w.cfg.Ledger.Ping(pctx)
		cancel()
		if err == nil {
			k.logger().Info("ledger answers again; pulling resumes")
			return
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// fallbackLoop hands the kind's waiting jobs to its fallback kind, without attempts, once its
// breaker has stayed open for fallback_after, and until the breaker closes.
func (k *kindRunner) fallbackLoop(ctx context.Context) {
	if k.kind.Fallback == "" || k.kind.FallbackAfter <= 0 {
		return
	}
	t := time.NewTicker(min(time.Second, k.kind.FallbackAfter/4))
	defer t.Stop()
	var openSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if k.pipeline.Breaker().State() == executor.BreakerClosed || k.paused() {
			openSince = time.Time{}
			continue
		}
		if openSince.IsZero() {
			openSince = time.Now()
		}
		if time.Since(openSince) < k.kind.FallbackAfter {
			continue
		}
		if !k.w.gate.enterPull(ctx) {
			return
		}
		_, err := k.puller.Fetch(ctx, k.w.cfg.MaxBatch, k.w.cfg.FetchWait, func(ds []*queue.Delivery) {
			k.w.gate.add(len(ds))
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
			defer cancel()
			if _, err := k.claimAndDispatch(pctx, ds, true, nil); err != nil {
				k.logger().Warn("fallback: ledger unavailable", "err", err)
			}
		})
		k.w.gate.done(1)
		if err != nil {
			k.logger().Warn("fallback: pull failed", "err", err)
		}
	}
}

// nakDelay is the redelivery delay for messages handed back unworked: at once on shutdown,
// later when the ledger is failing.
func nakDelay(claimErr error) time.Duration {
	if claimErr != nil {
		return claimFailedNak
	}
	return 0
}

// process claims a pulled batch and starts an attempt for every claimed key. Each delivery
// holds one bulkhead reservation, released here or when its attempt ends.
func (k *kindRunner) process(ctx context.Context, ds []*queue.Delivery) error {
	_, err := k.claimAndDispatch(ctx, ds, false, nil)
	return err
}

// claimAndDispatch claims ds and dispatches each: claimed jobs start an attempt, or with
// divert (breaker open past fallback_after) are handed to the fallback kind without one. In
// divert mode nothing was admitted, so nothing is released. A message on its last delivery is
// handed to runAlone instead (unless turn says this is its turn alone already). Every
// delivery in ds is counted as held by the solo gate; claimAndDispatch settles the count of
// those it neither started nor handed on. It returns the number of attempts started.
func (k *kindRunner) claimAndDispatch(ctx context.Context, ds []*queue.Delivery, divert bool, turn *soloTurn) (started int, err error) {
	release := k.pipeline.Release
	if divert {
		release = func(int) {}
	}
	passed := 0 // started, or handed to runAlone: they settle their own count
	defer func() { k.w.gate.done(len(ds) - passed) }()
	reqs := make([]idempotency.ClaimRequest, 0, len(ds))
	good := make([]*queue.Delivery, 0, len(ds))
	for _, d := range ds {
		if turn == nil && !divert && d.DecodeErr == nil && k.lastDelivery(d) {
			passed++
			k.attempts.Go(func() { k.runAlone(k.runCtx, d) })
			continue
		}
		crashAt(crashBeforeClaim, d.Env.Key, 0) // a no-op unless built with -tags chaos (testhook.go)
		if d.DecodeErr != nil {
			k.deadLetterUnowned(ctx, d, executor.ReasonMalformed, d.DecodeErr.Error())
			release(1)
			continue
		}
		if divert && d.Env.FallbackOf != "" {
			_ = d.Nak(k.kind.FallbackAfter) // a fallback job never falls back again: it waits
			continue
		}
		good = append(good, d)
		reqs = append(reqs, idempotency.ClaimRequest{
			JobID:       d.Env.ID,
			Kind:        d.Env.Kind,
			Key:         d.Env.Key,
			PayloadHash: d.Env.PayloadHash(),
			EnqueuedAt:  d.Env.EnqueuedAt,
			FallbackOf:  d.Env.FallbackOf,
			Lease:       k.kind.AckWait,
		})
	}
	if len(reqs) == 0 {
		return 0, nil
	}
	claimStart := time.Now()
	results, err := k.w.cfg.Ledger.Claim(ctx, reqs)
	k.w.cfg.Metrics.Ledger("claim", claimStart)
	if err != nil {
		for _, d := range good {
			_ = d.Nak(claimFailedNak)
		}
		release(len(good))
		return 0, err
	}
	// Duplicates are recorded first and acked after: commit, then ack (DESIGN rule 3).
	type settle struct {
		d      *queue.Delivery
		reason string // "" acks, else terms with this reason
	}
	var (
		records []idempotency.Record
		settles []settle
	)
	for i, res := range results {
		d := good[i]
		switch res.Status {
		case idempotency.Claimed:
			if divert {
				a := &attempt{d: d, lease: idempotency.Lease{Kind: d.Env.Kind, Key: d.Env.Key, Fence: res.Fence}}
				k.fallBack(ctx, a, "breaker open longer than fallback_after", k.logger().With("job_id", d.Env.ID, "key", d.Env.Key))
				continue
			}
			k.start(d, res, turn)
			passed++
			started++
			continue
		case idempotency.Busy:
			_ = d.Nak(res.Wait)
		case idempotency.AlreadySucceeded:
			if res.Owner != d.Env.ID {
				records = append(records, k.record(d, idempotency.StateSucceeded, "", res.Owner))
			}
			settles = append(settles, settle{d: d})
		case idempotency.AlreadyDead:
			if res.Owner == d.Env.ID {
				// Our own dead job redelivered: make sure its DLQ copy exists, then term.
				k.ensureDeadLettered(ctx, d, res)
				break
			}
			records = append(records, k.record(d, idempotency.StateDead, res.Reason, res.Owner))
			settles = append(settles, settle{d: d, reason: res.Reason})
		case idempotency.PayloadMismatch:
			k.deadLetterUnowned(ctx, d, executor.ReasonKeyReused,
				"idempotency key "+d.Env.Key+" was used by job "+res.Owner+" with a different payload")
		}
		release(1)
	}
	if err := k.w.cfg.Ledger.AddRecords(ctx, records); err != nil {
		k.logger().Warn("record duplicate jobs; they will be redelivered", "err", err, "count", len(records))
		for _, st := range settles {
			_ = st.d.Nak(claimFailedNak)
		}
		return started, nil
	}
	for _, st := range settles {
		if st.reason == "" {
			_ = st.d.Ack()
		} else {
			_ = st.d.Term(st.reason)
		}
		k.w.cfg.Metrics.Finished(k.kind.Name, "duplicate", st.d.Env.EnqueuedAt)
	}
	return started, nil
}

func (k *kindRunner) record(d *queue.Delivery, st idempotency.State, reason, owner string) idempotency.Record {
	return idempotency.Record{
		JobID: d.Env.ID, Kind: d.Env.Kind, Key: d.Env.Key, State: st, Reason: reason,
		DuplicateOf: owner, EnqueuedAt: d.Env.EnqueuedAt,
	}
}

// deadLetterUnowned dead-letters a job that does not own its key (malformed, key reused):
// record it, copy it to the DLQ, then term. If a step fails the message is nakked, and the
// redelivery does the same again (both steps are idempotent).
func (k *kindRunner) deadLetterUnowned(ctx context.Context, d *queue.Delivery, reason, msg string) {
	log := k.logger().With("job_id", d.Env.ID, "key", d.Env.Key, "reason", reason)
	if d.Env.ID != "" {
		rec := k.record(d, idempotency.StateDead, reason, "")
		rec.Error = msg
		if err := k.w.cfg.Ledger.AddRecords(ctx, []idempotency.Record{rec}); err != nil {
			log.Warn("record dead job; will retry", "err", err)
			_ = d.Nak(claimFailedNak)
			return
		}
		err := k.w.cfg.Queue.DeadLetter(ctx, d.Env, d.Data(), d.Headers(), queue.DeadInfo{
			Reason: reason, Attempts: 0, LastError: msg, Worker: k.w.cfg.ID, SourceSeq: d.StreamSeq,
		})
		if err != nil {
			log.Warn("dead-letter job; will retry", "err", err)
			_ = d.Nak(claimFailedNak)
			return
		}
	}
	log.Warn("job dead-lettered", "error", msg)
	k.w.cfg.Metrics.Finished(k.kind.Name, "dead", d.Env.EnqueuedAt)
	_ = d.Term(reason)
}

// ensureDeadLettered re-publishes a dead job's DLQ copy (or, for a job that fell back, its
// successor) if it is missing, then terms it.
func (k *kindRunner) ensureDeadLettered(ctx context.Context, d *queue.Delivery, res idempotency.ClaimResult) {
	if res.Reason == executor.ReasonFellBack {
		if err := k.publishFallback(ctx, d.Env); err != nil {
			k.logger().Warn("publish fallback job; will retry", "job_id", d.Env.ID, "err", err)
			_ = d.Nak(claimFailedNak)
			return
		}
		_ = d.Term(res.Reason)
		return
	}
	ok, err := k.w.cfg.Queue.DeadLettered(ctx, d.Env.Kind, d.Env.ID)
	if err == nil && !ok {
		st, serr := k.w.cfg.Ledger.Status(ctx, d.Env.ID)
		info := queue.DeadInfo{Reason: res.Reason, Worker: k.w.cfg.ID, SourceSeq: d.StreamSeq}
		if serr == nil {
			info.Attempts, info.LastError = st.Attempts, st.LastError
			if st.FinishedAt != nil {
				info.FailedAt = *st.FinishedAt
			}
			info.FirstFailedAt = st.FirstFailedAt
		}
		err = k.w.cfg.Queue.DeadLetter(ctx, d.Env, d.Data(), d.Headers(), info)
	}
	if err != nil {
		k.logger().Warn("dead-letter copy; will retry", "job_id", d.Env.ID, "err", err)
		_ = d.Nak(claimFailedNak)
		return
	}
	_ = d.Term(res.Reason)
}

// start runs the attempt of a claimed job in its own goroutine.
func (k *kindRunner) start(d *queue.Delivery, res idempotency.ClaimResult, turn *soloTurn) {
	ctx, cancel := context.WithCancelCause(context.WithValue(k.hardCtx, workerIDKey{}, k.w.cfg.ID))
	a := &attempt{d: d, lease: idempotency.Lease{Kind: d.Env.Kind, Key: d.Env.Key, Fence: res.Fence}, cancel: cancel, turn: turn}
	var once sync.Once
	a.unhold = func() {
		once.Do(func() {
			k.w.gate.done(1)
			if turn != nil {
				close(turn.released)
			}
		})
	}
	k.mu.Lock()
	k.inflight[a] = struct{}{}
	k.mu.Unlock()
	k.attempts.Go(func() {
		defer func() {
			k.mu.Lock()
			delete(k.inflight, a)
			k.mu.Unlock()
			cancel(nil)
			a.unhold()
		}()
		k.run(ctx, a, res.Attempts)
	})
}

// run runs one claimed attempt, settles its admission (telling the breaker what the
// downstream did) and commits its outcome.
func (k *kindRunner) run(ctx context.Context, a *attempt, number int) {
	settled := false
	defer func() {
		if !settled {
			k.pipeline.Release(1) // no handler call was made
		}
	}()
	d := a.d
	policy := k.pipeline.Policy()
	maxAttempts := policy.MaxAttempts
	if d.Env.MaxAttempts > 0 {
		maxAttempts = d.Env.MaxAttempts
	}
	log := k.logger().With("job_id", d.Env.ID, "key", d.Env.Key, "attempt", number)

	if number > maxAttempts {
		// Earlier attempts were spent by workers that died mid-attempt, perhaps crashed by
		// another job they held: the job gets one more attempt, alone in its worker (solo.go).
		switch {
		case number == maxAttempts+1 && a.turn != nil:
			log.Info("last chance: attempt budget spent by workers lost mid-attempt; one more attempt, alone")
		case number == maxAttempts+1:
			// Handed on, the message keeps its bulkhead reservation.
			settled = k.handToRunAlone(ctx, a, log)
			return
		default:
			k.giveUp(ctx, a, number-1, "attempt budget spent by workers lost mid-attempt, and its last chance, run alone, was lost too", log)
			return
		}
	}

	att := Attempt{Envelope: d.Env, Number: number, MaxAttempts: maxAttempts, Fence: a.lease.Fence}
	start := time.Now()
	var tx pgx.Tx // set while a TxHandler's transaction is open
	defer func() {
		if tx != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	var (
		overMu   sync.Mutex
		returned bool
		overdue  func()
	)
	result, v := executor.Execute(ctx, k.pipeline, func() {
		overMu.Lock()
		defer overMu.Unlock()
		if returned {
			return
		}
		overdue = k.w.cfg.Metrics.Overrun(k.kind.Name)
		a.unbeaten.Store(true)
		a.unhold() // its message is left to lapse: a last chance waiting elsewhere may run
		k.w.gate.addOverrun(1)
		log.Warn("handler still running past its timeout; its slot stays taken until it returns, and its lease is left to lapse so another worker can take the job over",
			"timeout", policy.Timeout, "running_for", time.Since(start).Round(time.Millisecond))
	}, func(ctx context.Context) ([]byte, error) {
		if k.kind.TxHandler == nil {
			return k.kind.Handler(ctx, att)
		}
		var err error
		if tx, err = k.w.cfg.Ledger.Begin(ctx); err != nil {
			return nil, err
		}
		return k.kind.TxHandler(ctx, tx, att)
	})
	crashAt(crashAfterCall, d.Env.Key, number) // a no-op unless built with -tags chaos (testhook.go)
	overMu.Lock()
	returned = true
	if overdue != nil {
		overdue()
		k.w.gate.addOverrun(-1)
	}
	overMu.Unlock()
	k.w.cfg.Metrics.Attempt(k.kind.Name, resultClass(v), time.Since(start))
	k.pipeline.Finish(v)
	settled = true
	if v.Class != executor.Succeeded && tx != nil {
		// A failed attempt's own writes are undone before its outcome is written.
		_ = tx.Rollback(context.WithoutCancel(ctx))
		tx = nil
	}

	a.ran = attemptOutcome(v)
	out := idempotency.Outcome{Lease: a.lease, Attempt: a.ran, Worker: k.w.cfg.ID}
	switch v.Class {
	case executor.Succeeded:
		out.State, out.Result = idempotency.StateSucceeded, result
	case executor.Abandoned:
		if errors.Is(v.Err, idempotency.ErrLeaseLost) {
			log.Warn("lease lost during attempt; writing nothing, not acking (the new owner finishes the job)")
			return
		}
		// Shutdown deadline: give the key back without counting the attempt, redeliver now.
		out.State, out.Release = idempotency.StateRetrying, true
		wctx, cancel := detached(ctx)
		defer cancel()
		if k.commit(wctx, out, log) {
			_ = d.Nak(0)
		}
		return
	case executor.Retry:
		out.State, out.Error = idempotency.StateRetrying, v.Err.Error()
		out.RetryIn = policy.Backoff.RetryDelay(number, v, rand.Float64())
		if br := k.pipeline.Breaker(); executor.DownstreamFailure(v) && br.State() != executor.BreakerClosed {
			// The breaker is open, perhaps because of this very failure: an outage spends no
			// attempts and dead-letters nothing. Retry once the breaker lets calls through.
			out.Release = true
			out.RetryIn = max(out.RetryIn, time.Until(br.OpenUntil()))
			break
		}
		if number >= maxAttempts {
			k.giveUp(ctx, a, number, v.Err.Error(), log)
			return
		}
	case executor.Dead:
		k.finishDead(ctx, a, number, v.Reason, v.Err.Error(), log)
		return
	}

	committed := false
	wctx, cancel := detached(ctx)
	defer cancel()
	if tx != nil {
		committed = k.commitTx(wctx, tx, out, log)
		tx = nil
	} else {
		committed = k.commit(wctx, out, log)
	}
	if !committed {
		return
	}
	switch out.State {
	case idempotency.StateSucceeded:
		log.Debug("job succeeded", "duration", time.Since(start))
		k.w.cfg.Metrics.Finished(k.kind.Name, "succeeded", d.Env.EnqueuedAt)
		if k.w.cfg.Hooks.SkipAck != nil && k.w.cfg.Hooks.SkipAck(d.Env) {
			return
		}
		if err := d.Ack(); err != nil {
			log.Warn("ack after commit failed; the redelivery will find the key succeeded", "err", err)
		}
	case idempotency.StateRetrying:
		log.Info("attempt failed; will retry", "error", out.Error, "retry_in", out.RetryIn.Round(time.Millisecond),
			"attempt_counted", !out.Release)
		_ = d.Nak(out.RetryIn)
	}
}

// handToRunAlone gives the key back without counting the attempt and hands the message, with
// its bulkhead reservation, to runAlone: the job's last chance is claimed again once it can
// run alone. A claim held while waiting would be lost with the worker if the job running
// alone before it crashed it. It reports whether the message was handed on.
func (k *kindRunner) handToRunAlone(ctx context.Context, a *attempt, log *slog.Logger) bool {
	wctx, cancel := detached(ctx)
	defer cancel()
	out := idempotency.Outcome{Lease: a.lease, State: idempotency.StateRetrying, Release: true, Worker: k.w.cfg.ID}
	if !k.commit(wctx, out, log) {
		return false // the lease lapses and the message is redelivered
	}
	k.w.gate.add(1) // runAlone's; the attempt's own is settled when it returns
	k.attempts.Go(func() { k.runAlone(k.runCtx, a.d) })
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

// commit writes one outcome, fenced. It returns false if nothing may follow: the lease was
// lost (no ack, no nak) or the ledger failed (the message is redelivered after AckWait, and the
// key's lease expires by then).
func (k *kindRunner) commit(ctx context.Context, out idempotency.Outcome, log *slog.Logger) bool {
	applied, err := k.w.committer.finish(ctx, out)
	if err != nil {
		log.Error("commit outcome failed; not acking (the job will be redelivered)", "err", err, "state", out.State)
		return false
	}
	if !applied {
		log.Warn("lease lost before commit; writing nothing, not acking (the new owner finishes the job)")
		return false
	}
	return true
}

// commitTx writes a success in the handler's transaction and commits both, or rolls both back
// when the lease was lost.
func (k *kindRunner) commitTx(ctx context.Context, tx pgx.Tx, out idempotency.Outcome, log *slog.Logger) bool {
	defer k.w.cfg.Metrics.Ledger("finish", time.Now())
	applied, err := k.w.cfg.Ledger.FinishTx(ctx, tx, []idempotency.Outcome{out})
	if err == nil && !applied[0] {
		_ = tx.Rollback(ctx)
		log.Warn("lease lost before commit; the handler's writes are rolled back, not acking")
		return false
	}
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		log.Error("commit outcome failed; not acking (the job will be redelivered)", "err", err, "state", out.State)
		return false
	}
	return true
}

// giveUp ends a job whose attempts are spent: it falls back to the kind's fallback kind when
// there is one (and the job is not itself a fallback), else it is dead-lettered.
func (k *kindRunner) giveUp(ctx context.Context, a *attempt, attempts int, msg string, log *slog.Logger) {
	if k.kind.Fallback != "" && a.d.Env.FallbackOf == "" {
		k.fallBack(ctx, a, msg, log)
		return
	}
	k.finishDead(ctx, a, attempts, executor.ReasonMaxAttempts, msg, log)
}

// fallBack commits the key as dead with reason fell_back and the successor's id, publishes
// the successor (same key and payload, on the fallback kind, deduplicated by its id), then
// terms the message. If the publish fails the message is nakked; its redelivery finds the key
// fell_back and publishes again.
func (k *kindRunner) fallBack(ctx context.Context, a *attempt, msg string, log *slog.Logger) {
	ctx, cancel := detached(ctx)
	defer cancel()
	out := idempotency.Outcome{Lease: a.lease, State: idempotency.StateDead, Reason: executor.ReasonFellBack,
		Error: msg, FallbackTo: FallbackID(a.d.Env.ID), Attempt: a.ran, Worker: k.w.cfg.ID}
	if !k.commit(ctx, out, log) {
		return
	}
	if err := k.publishFallback(ctx, a.d.Env); err != nil {
		log.Error("publish fallback job failed; the job will be redelivered and handed over again", "err", err)
		_ = a.d.Nak(claimFailedNak)
		return
	}
	log.Warn("job handed to its fallback kind", "fallback", k.kind.Fallback, "fallback_job_id", out.FallbackTo, "error", msg)
	k.w.cfg.Metrics.Finished(k.kind.Name, "fell_back", a.d.Env.EnqueuedAt)
	_ = a.d.Term(executor.ReasonFellBack)
}

func (k *kindRunner) publishFallback(ctx context.Context, env queue.Envelope) error {
	fb := env
	fb.ID, fb.Kind, fb.FallbackOf = FallbackID(env.ID), k.kind.Fallback, env.ID
	fb.EnqueuedAt = time.Now()
	_, err := k.w.cfg.Queue.Publish(ctx, fb)
	return err
}

// FallbackID is the id of the job that replaces job id on its fallback kind: derived from id
// alone, so that publishing it twice stores it once.
func FallbackID(id string) string {
	const suffix = "-fallback"
	if len(id)+len(suffix) <= queue.MaxIDLen {
		return id + suffix
	}
	sum := sha256.Sum256([]byte(id))
	return "fallback-" + hex.EncodeToString(sum[:20])
}

// finishDead commits the key as dead, copies the job to the DLQ (awaiting the PubAck), then
// terms the message. If the copy fails the message is nakked; its redelivery finds the key dead
// and copies again (deduplicated by Nats-Msg-Id).
func (k *kindRunner) finishDead(ctx context.Context, a *attempt, attempts int, reason, msg string, log *slog.Logger) {
	ctx, cancel := detached(ctx)
	defer cancel()
	out := idempotency.Outcome{Lease: a.lease, State: idempotency.StateDead, Reason: reason, Error: msg,
		Attempt: a.ran, Worker: k.w.cfg.ID}
	if !k.commit(ctx, out, log) {
		return
	}
	info := queue.DeadInfo{Reason: reason, Attempts: attempts, LastError: idempotency.Truncate(msg, 1024),
		Worker: k.w.cfg.ID, SourceSeq: a.d.StreamSeq, FailedAt: time.Now()}
	if st, err := k.w.cfg.Ledger.Status(ctx, a.d.Env.ID); err == nil {
		info.FirstFailedAt = st.FirstFailedAt
	}
	err := k.w.cfg.Queue.DeadLetter(ctx, a.d.Env, a.d.Data(), a.d.Headers(), info)
	if err != nil {
		log.Error("dead-letter copy failed; the job will be redelivered and copied again", "err", err)
		_ = a.d.Nak(claimFailedNak)
		return
	}
	log.Warn("job dead-lettered", "reason", reason, "error", msg, "attempts", attempts)
	k.w.cfg.Metrics.Finished(k.kind.Name, "dead", a.d.Env.EnqueuedAt)
	_ = a.d.Term(reason)
}

// heartbeatLoop extends the leases of running attempts every AckWait/3 and tells the server
// they are in progress. An attempt whose lease was lost is cancelled.
func (k *kindRunner) heartbeatLoop(ctx context.Context) {
	every := k.kind.AckWait / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		as := make([]*attempt, 0, len(k.inflight))
		for a := range k.inflight {
			if !a.unbeaten.Load() {
				as = append(as, a)
			}
		}
		k.mu.Unlock()
		if len(as) == 0 {
			continue
		}
		// Tell the server first: a slow ledger must not let AckWait pass and cause a
		// pointless redelivery. A zombie's InProgress is harmless; it never acks.
		leases := make([]idempotency.Lease, len(as))
		for i, a := range as {
			leases[i] = a.lease
			_ = a.d.InProgress()
		}
		hctx, cancel := context.WithTimeout(ctx, every)
		hbStart := time.Now()
		alive, err := k.w.cfg.Ledger.Heartbeat(hctx, leases, k.kind.AckWait)
		k.w.cfg.Metrics.Ledger("heartbeat", hbStart)
		cancel()
		if err != nil {
			k.logger().Warn("heartbeat failed; will try again", "err", err, "attempts", len(as))
			continue
		}
		for i, a := range as {
			if !alive[i] {
				a.unbeaten.Store(true)
				a.cancel(idempotency.ErrLeaseLost)
			}
		}
	}
}

// detached is a context for the writes that finish an attempt: not cancelled with the
// attempt (the outcome must be written), but bounded, so a black-holed database cannot hold
// the attempt forever.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
