package worker

import (
	"context"
	"time"

	"github.com/levee-dev/levee/internal/executor"
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

// settleStray dead-letters one stray through the one dead-letter path (design rule 32): it is
// recorded in the ledger (job_records, so that `enqueue status <id>` finds it), copied to the
// DLQ under s.Env (its subject's kind token, or queue.StrayKind, and an id made of its stream
// sequence) with its subject kept, then removed from the work stream.
func (w *Worker) settleStray(ctx context.Context, s *queue.Stray) {
	x := dlq{ledger: w.cfg.Ledger, queue: w.cfg.Queue, metrics: w.cfg.Metrics, log: w.log, worker: w.cfg.ID}
	j := &job{msg: strayMessage{s}, env: s.Env, seq: s.Seq}
	x.deadLetter(ctx, j, death{reason: executor.ReasonMalformed, msg: s.Problem, subject: s.Subject}, false)
}

// strayMessage is a stray as the dead-letter path settles it: terminating it removes it from
// the work stream, confirmed by the server.
type strayMessage struct{ s *queue.Stray }

func (m strayMessage) Ack() error {
	ctx, cancel := context.WithTimeout(context.Background(), ledgerTimeout)
	defer cancel()
	return m.s.Ack(ctx)
}
func (m strayMessage) Term(string) error             { return m.Ack() }
func (m strayMessage) Nak(delay time.Duration) error { return m.s.Nak(delay) }
func (m strayMessage) InProgress() error             { return nil }
func (m strayMessage) Data() []byte                  { return m.s.Data }
func (m strayMessage) Headers() map[string][]string  { return m.s.Header }
