package worker

import (
	"context"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// strayBatch bounds the strays taken from each stray consumer at once.
const strayBatch = 16

// straysLoop dead-letters the work stream's stray messages, those whose subject matches no
// kind's consumer (no id token, or tokens after the id: design rule 35), as malformed. Every
// worker runs it; the stray consumers (queue.OpenStrays) hand each message to one of them.
func (w *Worker) straysLoop(ctx context.Context, r *queue.StrayReader) {
	for ctx.Err() == nil {
		strays, err := r.Fetch(ctx, strayBatch, w.cfg.FetchWait)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("read stray messages", "err", err)
			}
			sleep(ctx, errorPause)
			continue
		}
		for _, s := range strays {
			// A stray taken is settled even if shutdown starts meanwhile: it is quick.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
			w.settleStray(sctx, s)
			cancel()
		}
	}
}

// settleStray dead-letters one stray as one dead-letter path does (design rule 32): it
// records the stray in the ledger (job_records, so that `enqueue status <id>` finds it), copies
// it to the DLQ under s.Env (its subject's kind token, or queue.StrayKind, and an id made
// of its stream sequence), then acks it. A failed step naks it; the redelivery repeats every
// step, each idempotent (the record keeps its first word, the copy is deduplicated).
func (w *Worker) settleStray(ctx context.Context, s *queue.Stray) {
	log := w.log.With("job_id", s.Env.ID, "kind", s.Env.Kind, "seq", s.Seq, "reason", executor.ReasonMalformed)
	rec := idempotency.Record{JobID: s.Env.ID, Kind: s.Env.Kind, Key: s.Env.Key, State: idempotency.StateDead,
		Reason: executor.ReasonMalformed, Error: s.Problem, EnqueuedAt: s.Env.EnqueuedAt}
	if err := w.cfg.Ledger.AddRecords(ctx, []idempotency.Record{rec}); err != nil {
		log.Warn("record stray message; will retry", "err", err)
		_ = s.Nak(claimFailedNak)
		return
	}
	err := w.cfg.Queue.DeadLetter(ctx, s.Env, s.Data, s.Header, queue.DeadInfo{
		Reason: executor.ReasonMalformed, LastError: s.Problem, Worker: w.cfg.ID, SourceSeq: s.Seq,
		OriginalSubject: s.Subject, FailedAt: time.Now(),
	})
	if err != nil {
		log.Warn("dead-letter stray message; will retry", "err", err)
		_ = s.Nak(claimFailedNak)
		return
	}
	if err := s.Ack(ctx); err != nil {
		log.Warn("ack stray message after its dead-letter copy; its redelivery finds the copy", "err", err)
		return
	}
	log.Warn("stray message dead-lettered: its subject matches no kind's consumer", "error", s.Problem)
}
