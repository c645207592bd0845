package worker

import (
	"cmp"
	"context"
	"time"

	each "github.com/levee-dev/levee/internal/every"

	"github.com/levee-dev/levee/internal/queue"
)

// Defaults of Config.SweepEvery and of the per-kind Config.SweepAfter.
const (
	defaultSweepEvery    = time.Minute
	minSweepAfter        = 10 * time.Minute
	sweepAfterDeliveries = 3 // × max_deliveries × ack_wait
)

// sweepLimit bounds the messages one sweep settles per kind; the next sweep takes the rest.
const sweepLimit = 256

// sweepLoop settles, every Config.SweepEvery, the messages stranded past max_deliveries whose
// advisory never came (design rule 6; queue.StrandedCandidates says what a candidate is and
// why a healthy message is not harmed). Each candidate is settled by strandedJob, exactly as
// its advisory would have been. Every worker runs the loop, but for each kind only the
// worker that leads it in the fleet registry (the live worker of the kind with the smallest
// id) sweeps, so that two workers rarely sweep at once; a double sweep is harmless (each step
// of strandedJob is idempotent, and a job requeued twice is stored once: its new message's id
// is derived from the old message's sequence).
func (w *Worker) sweepLoop(ctx context.Context) {
	every := cmp.Or(w.cfg.SweepEvery, defaultSweepEvery)
	if every < 0 {
		return
	}
	each.Do(ctx, every, false, func(ctx context.Context) bool {
		w.sweepOnce(ctx)
		return true
	})
}

// sweepAfter is how long after it was stored a message of kind k may be swept.
func (w *Worker) sweepAfter(k Kind) time.Duration {
	if w.cfg.SweepAfter > 0 {
		return w.cfg.SweepAfter
	}
	return max(minSweepAfter, sweepAfterDeliveries*time.Duration(k.Policy.MaxDeliveries)*k.Policy.AckWait)
}

// sweepOnce sweeps the kinds this worker leads and returns how many messages it settled.
func (w *Worker) sweepOnce(ctx context.Context) int {
	fleet := w.fleet.Load()
	settled := 0
	for _, k := range w.kinds {
		name := k.kind.Name
		if fleet != nil && !fleet.Leads(name) {
			continue
		}
		seqs, err := w.cfg.Queue.StrandedCandidates(ctx, name, time.Now().Add(-w.sweepAfter(k.kind)), sweepLimit)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("sweep for stranded messages", "kind", name, "err", err)
		}
		for _, seq := range seqs {
			if ctx.Err() != nil {
				return settled
			}
			w.log.Warn("sweep: message past max_deliveries whose advisory never came; settling it", "kind", name, "seq", seq)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleAdvisoryTimeout)
			err := w.strandedJob(sctx, &queue.Advisory{Seq: seq, Deliveries: uint64(k.kind.Policy.MaxDeliveries)})
			cancel()
			if err != nil {
				w.log.Warn("sweep: settle stranded message; the next sweep retries", "kind", name, "seq", seq, "err", err)
				continue
			}
			settled++
		}
	}
	return settled
}
