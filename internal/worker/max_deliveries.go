package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// maxDeliveriesLoop dead-letters jobs whose deliveries ran out (JetStream's MaxDeliver), so
// that none is stranded in the work stream: for each captured advisory it marks the job dead
// in the ledger with reason max_deliveries (unless its key already succeeded), copies it to
// the DLQ, deletes it from the work stream, and only then acks the advisory. Every step is
// idempotent, so an advisory retried after a crash does no harm. All workers run this loop;
// the advisories' work-queue consumer hands each to one of them.
//
// Advisories are taken one at a time, each as soon as it arrives: an advisory held by a worker
// is only handed to another after queue.AdvisoryAckWait, and a worker that waits to fill a
// batch holds the first ones longer, at risk of dying with them (the poison job behind them
// crashes workers).
func (w *Worker) maxDeliveriesLoop(ctx context.Context, md *queue.MaxDeliveries) {
	for ctx.Err() == nil {
		advs, err := md.Fetch(ctx, 1, w.cfg.FetchWait)
		if err != nil {
			w.log.Warn("read max-deliveries advisories", "err", err)
			sleep(ctx, errorPause)
			continue
		}
		for _, adv := range advs {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleAdvisoryTimeout)
			err := w.strandedJob(sctx, adv)
			cancel()
			if err != nil {
				w.log.Warn("dead-letter job after max deliveries; will retry", "seq", adv.Seq, "err", err)
				_ = adv.Nak(claimFailedNak)
				continue
			}
			_ = adv.Ack()
		}
	}
}

// settleAdvisoryTimeout bounds the settling of one advisory, below queue.AdvisoryAckWait.
const settleAdvisoryTimeout = 15 * time.Second

func (w *Worker) strandedJob(ctx context.Context, adv *queue.Advisory) error {
	q := w.cfg.Queue
	job, err := q.JobAt(ctx, adv.Seq)
	if errors.Is(err, queue.ErrNotFound) {
		return nil // acked or removed since: nothing is stranded
	}
	if err != nil {
		return err
	}
	msg := fmt.Sprintf("delivered %d times without an outcome (it crashed or hung the workers that took it)", adv.Deliveries)
	action, err := SettleStranded(ctx, w.cfg.Ledger, q, Stranded{
		Job: job, Reason: executor.ReasonMaxDeliveries, Error: msg, Worker: w.cfg.ID,
		RequeueID: fmt.Sprintf("requeue:%s:%d", job.Env.ID, adv.Seq),
	}, func(ctx context.Context) error { return q.DeleteJob(ctx, adv.Seq) })
	if err != nil {
		return err
	}
	log := w.log.With("job_id", job.Env.ID, "kind", job.Env.Kind, "key", job.Env.Key)
	switch action {
	case idempotency.StrandedRequeue:
		// Healthy, only out of deliveries (a long outage, a key busy under another job), or
		// never run alone (a bystander of a message that crashed the workers holding both):
		// published again as a new message with a fresh delivery count.
		log.Info("job ran out of deliveries without having run alone, or while its key is healthy; published again", "deliveries", adv.Deliveries)
	case idempotency.StrandedDead:
		log.Warn("job dead-lettered after its deliveries ran out", "error", msg, "malformed", job.DecodeErr != nil)
	}
	return nil
}
