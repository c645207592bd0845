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
func (w *Worker) maxDeliveriesLoop(ctx context.Context, md *queue.MaxDeliveries) {
	for ctx.Err() == nil {
		advs, err := md.Fetch(ctx, 16, w.cfg.FetchWait)
		if err != nil {
			w.log.Warn("read max-deliveries advisories", "err", err)
			sleep(ctx, errorPause)
			continue
		}
		for _, adv := range advs {
			if err := w.strandedJob(context.WithoutCancel(ctx), adv); err != nil {
				w.log.Warn("dead-letter job after max deliveries; will retry", "seq", adv.Seq, "err", err)
				_ = adv.Nak(claimFailedNak)
				continue
			}
			_ = adv.Ack()
		}
	}
}

func (w *Worker) strandedJob(ctx context.Context, adv *queue.Advisory) error {
	q := w.cfg.Queue
	job, err := q.JobAt(ctx, adv.Seq)
	if errors.Is(err, queue.ErrNotFound) {
		return nil // acked or removed since: nothing is stranded
	}
	if err != nil {
		return err
	}
	reason, msg := executor.ReasonMaxDeliveries,
		fmt.Sprintf("delivered %d times without an outcome (it crashed or hung the workers that took it)", adv.Deliveries)
	if job.DecodeErr != nil {
		reason, msg = executor.ReasonMalformed, job.DecodeErr.Error()
	}
	log := w.log.With("job_id", job.Env.ID, "kind", job.Env.Kind, "key", job.Env.Key, "reason", reason)
	if job.Env.ID == "" {
		log.Warn("job message with no valid id ran out of deliveries; deleting it", "seq", adv.Seq, "error", msg)
		return q.DeleteJob(ctx, adv.Seq)
	}
	action, err := w.cfg.Ledger.MarkDead(ctx, idempotency.Record{
		JobID: job.Env.ID, Kind: job.Env.Kind, Key: job.Env.Key, Reason: reason, Error: msg, EnqueuedAt: job.Env.EnqueuedAt,
	}, false)
	if err != nil {
		return err
	}
	switch action {
	case idempotency.StrandedRequeue:
		// Healthy, only out of deliveries (a long outage, a key busy under another job):
		// publish it again as a new message with a fresh delivery count.
		if err := q.Replay(ctx, job.Env, fmt.Sprintf("requeue:%s:%d", job.Env.ID, adv.Seq)); err != nil {
			return err
		}
		log.Info("job ran out of deliveries while its key is healthy; published again", "deliveries", adv.Deliveries)
	case idempotency.StrandedDead:
		err := q.DeadLetter(ctx, job.Env, job.Data, job.Header, queue.DeadInfo{
			Reason: reason, LastError: msg, Worker: w.cfg.ID, SourceSeq: adv.Seq, FailedAt: time.Now(),
		})
		if err != nil {
			return err
		}
		log.Warn("job dead-lettered after its deliveries ran out", "error", msg)
	}
	return q.DeleteJob(ctx, adv.Seq)
}
