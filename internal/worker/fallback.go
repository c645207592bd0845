package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/levee-dev/levee/internal/every"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// fallbackLoop hands the kind's waiting jobs to its fallback kind, without attempts, once its
// breaker has stayed open for fallback_after, and until the breaker closes.
func (k *kindRunner) fallbackLoop(ctx context.Context) {
	if k.kind.Policy.Fallback == "" || k.kind.Policy.FallbackAfter <= 0 {
		return
	}
	var openSince time.Time
	every.Do(ctx, min(time.Second, k.kind.Policy.FallbackAfter/4), false, func(ctx context.Context) bool {
		if k.pipeline.Breaker().State() == executor.BreakerClosed || k.paused() {
			openSince = time.Time{}
			return true
		}
		if openSince.IsZero() {
			openSince = time.Now()
		}
		if time.Since(openSince) < k.kind.Policy.FallbackAfter {
			return true
		}
		if !k.w.gate.enterPull(ctx) {
			return false
		}
		_, err := k.puller.Fetch(ctx, k.w.cfg.MaxBatch, k.w.cfg.FetchWait, func(ds []*queue.Delivery) {
			k.w.gate.add(len(ds))
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
			defer cancel()
			if _, err := k.claimAndDispatch(pctx, newJobs(ds), true, nil); err != nil {
				k.logger().Warn("fallback: ledger unavailable", "err", err)
			}
		})
		k.w.gate.done(1)
		if err != nil {
			k.logger().Warn("fallback: pull failed", "err", err)
		}
		return true
	})
}

// fallBack settles a job whose key was committed dead with reason fell_back (stored, naming
// the successor): it publishes the successor (same key and payload, on the fallback kind,
// deduplicated by its id), then terms the message. If the publish fails the message is
// nakked; its redelivery finds the key fell_back and publishes again (ensureDeadLettered).
func (k *kindRunner) fallBack(ctx context.Context, j *job, stored idempotency.Outcome, log *slog.Logger) {
	if err := k.publishFallback(ctx, j.env); err != nil {
		log.Error("publish fallback job failed; the job will be redelivered and handed over again", "err", err)
		_ = j.msg.Nak(claimFailedNak)
		return
	}
	log.Warn("job handed to its fallback kind", "fallback", k.kind.Policy.Fallback, "fallback_job_id", stored.FallbackTo, "error", stored.Error)
	k.metrics.Finished(k.kind.Name, "fell_back", j.env.EnqueuedAt)
	_ = j.msg.Term(executor.ReasonFellBack)
}

func (k *kindRunner) publishFallback(ctx context.Context, env queue.Envelope) error {
	fb := env
	fb.ID, fb.Kind, fb.FallbackOf = FallbackID(env.ID), k.kind.Policy.Fallback, env.ID
	fb.EnqueuedAt = time.Now()
	_, err := k.queue.Publish(ctx, fb)
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
