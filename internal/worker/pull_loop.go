package worker

import (
	"cmp"
	"context"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/queue"
)

// maxClaimsInFlight bounds the pulled groups one kind's pull loop claims at once.
const maxClaimsInFlight = 4

// pullLoop admits, pulls and hands each pulled group to a claim, until ctx ends (design rule
// 16: admission comes before the pull, so a message never waits inside the worker).
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
				if _, err := k.claimAndDispatch(pctx, newJobs(ds), false, nil); err != nil {
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
