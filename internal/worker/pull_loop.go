package worker

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
)

// maxClaimsInFlight is how many pulled groups one kind's pull loop claims at once; the kind
// holds up to that many groups ahead of its slots (worker.go sets MaxAhead from it).
const maxClaimsInFlight = 4

// pullLoop admits, pulls and hands each pulled group to a claim, until ctx ends (design rule
// 16: admission comes before the pull, so the backlog waits in the stream; a job pulled ahead
// of its bulkhead slot waits for it at most slotWait, slot.go).
func (k *kindRunner) pullLoop(ctx context.Context) {
	log := k.logger()
	// Claims run beside the pulls: while one pulled group is being claimed, the loop admits and
	// pulls the next, up to maxClaimsInFlight groups at once. The first failed claim stops the
	// pulling until the ledger answers again.
	var (
		claims  = make(chan struct{}, maxClaimsInFlight)
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
		n, trial, err := k.pipeline.AdmitTrial(ctx, k.w.cfg.MaxBatch)
		if err != nil {
			return
		}
		if k.paused() { // paused while admission waited
			k.pipeline.Release(n, trial)
			continue
		}
		// A last chance waiting to run alone stops the pulls of every kind (solo.go).
		if !k.w.gate.enterPull(ctx) {
			k.pipeline.Release(n, trial)
			return
		}
		got, err := k.puller.Fetch(ctx, n, k.w.cfg.FetchWait, func(ds []*queue.Delivery) {
			k.w.gate.add(len(ds))
			if err := claimErr(); ctx.Err() != nil || err != nil {
				// Pulled while shutting down, or the ledger just failed: hand them back.
				for _, d := range ds {
					_ = d.Nak(nakDelay(err))
				}
				k.pipeline.Release(len(ds), trial)
				k.w.gate.done(len(ds))
				return
			}
			if br := k.pipeline.Breaker(); br.State() == executor.BreakerOpen {
				// The breaker opened while the pull waited: these wait for it in the stream,
				// unclaimed, instead of calling a failing downstream (design rule 37).
				for _, d := range ds {
					_ = d.Nak(max(time.Until(br.OpenUntil()), 0))
				}
				k.pipeline.Release(len(ds), trial)
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
				js := newJobs(ds)
				for _, j := range js {
					j.trial = trial
				}
				if _, err := k.claimAndDispatch(pctx, js, false, nil); err != nil {
					mu.Lock()
					failed = cmp.Or(failed, err)
					mu.Unlock()
				}
			})
		})
		k.w.gate.done(1) // the pull itself; what it brought is counted by the claims
		k.pipeline.Pulled(n, got, trial)
		if err != nil {
			log.Warn("pull failed; retrying", "err", err)
			sleep(ctx, errorPause)
		}
	}
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
		err := k.ledger.Ping(pctx)
		cancel()
		if err == nil {
			k.logger().Info("ledger answers again; pulling resumes")
			return
		}
		wait = min(wait*2, 5*time.Second)
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
