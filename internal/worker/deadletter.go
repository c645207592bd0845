package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
	"github.com/levee-dev/levee/internal/queue"
)

// death says why a job cannot succeed.
type death struct {
	reason   string
	msg      string
	attempts int
	// subject, for a message whose subject names no job, is kept on its copy.
	subject string
}

// maxCopyError bounds the last error carried by a dead-letter copy.
const maxCopyError = 1024

// dlq is what the one dead-letter path needs: the ledger, JetStream, metrics and a logger.
type dlq struct {
	ledger  ledgerPort
	queue   queuePort
	metrics *metrics.Metrics
	log     *slog.Logger
	worker  string // names the worker on the copies
}

func (k *kindRunner) dlq() dlq {
	return dlq{ledger: k.ledger, queue: k.queue, metrics: k.metrics, log: k.log, worker: k.w.cfg.ID}
}

// deadLetter is the one way a delivered job dies (design rule 32); see dlq.deadLetter.
func (k *kindRunner) deadLetter(ctx context.Context, j *job, d death, owned bool) {
	k.dlq().deadLetter(ctx, j, d, owned)
}

// deadLetter is the one way a delivered message dies (design rule 32). owned says that the
// job's own key already holds the dead outcome (committed under its claim); otherwise (a
// malformed message, a key another job used with another payload, a stray) the job is first
// recorded dead in the ledger, as a job that does not own its key. Then its copy is stored in
// the DLQ, awaiting the stream's acknowledgement, and only then is the message terminated. A
// failed step naks the message: its redelivery repeats every step, each idempotent (the record
// keeps its first word, the copy is deduplicated by design rule 7, a dead key is found dead).
func (x dlq) deadLetter(ctx context.Context, j *job, d death, owned bool) {
	log := x.log.With("job_id", j.env.ID, "key", j.env.Key, "reason", d.reason)
	if j.env.ID == "" {
		// Not even an id to name it by (a subject that is no job's): nothing to record or copy.
		log.Warn("message with no job id terminated", "error", d.msg)
		_ = j.msg.Term(d.reason)
		return
	}
	info := queue.DeadInfo{Reason: d.reason, Attempts: d.attempts, LastError: idempotency.Truncate(d.msg, maxCopyError),
		Worker: x.worker, SourceSeq: j.seq, FailedAt: time.Now(), OriginalSubject: d.subject}
	if owned {
		if st, err := x.ledger.Status(ctx, j.env.ID); err == nil {
			info.FirstFailedAt = st.FirstFailedAt
			if info.LastError == "" {
				info.LastError = idempotency.Truncate(st.LastError, maxCopyError)
			}
			if info.Attempts == 0 {
				info.Attempts = st.Attempts
			}
			if st.FinishedAt != nil {
				info.FailedAt = *st.FinishedAt
			}
		}
	} else {
		rec := record(j, idempotency.StateDead, d.reason, "")
		rec.Error = d.msg
		if err := x.ledger.AddRecords(ctx, []idempotency.Record{rec}); err != nil {
			log.Warn("record dead job failed; it will be redelivered and dead-lettered again", "err", err)
			_ = j.msg.Nak(claimFailedNak)
			return
		}
	}
	if err := x.queue.DeadLetter(ctx, j.env, j.msg.Data(), nats.Header(j.msg.Headers()), info); err != nil {
		log.Error("dead-letter copy failed; the job will be redelivered and copied again", "err", err)
		_ = j.msg.Nak(claimFailedNak)
		return
	}
	log.Warn("job dead-lettered", "error", d.msg, "attempts", info.Attempts)
	x.metrics.Finished(j.env.Kind, "dead", j.env.EnqueuedAt)
	if err := j.msg.Term(d.reason); err != nil {
		log.Warn("terminate the dead-lettered message failed; its redelivery finds it dead and copied", "err", err)
	}
}

// ensureDeadLettered settles a redelivery of a job whose own key is dead: its DLQ copy (or,
// for a job that fell back, its successor) is stored if missing, then the message is
// terminated.
func (k *kindRunner) ensureDeadLettered(ctx context.Context, j *job, res idempotency.ClaimResult) {
	if res.Reason == executor.ReasonFellBack {
		if err := k.publishFallback(ctx, j.env); err != nil {
			k.log.Warn("publish fallback job; will retry", "job_id", j.env.ID, "err", err)
			_ = j.msg.Nak(claimFailedNak)
			return
		}
		_ = j.msg.Term(res.Reason)
		return
	}
	ok, err := k.queue.DeadLettered(ctx, j.env.Kind, j.env.ID)
	if err != nil {
		k.log.Warn("look up dead-letter copy; will retry", "job_id", j.env.ID, "err", err)
		_ = j.msg.Nak(claimFailedNak)
		return
	}
	if ok {
		_ = j.msg.Term(res.Reason)
		return
	}
	k.deadLetter(ctx, j, death{reason: res.Reason}, true)
}

// Stranded is a job message taken out of the normal flow: its deliveries ran out (a
// max-deliveries advisory, or the sweep for advisories that were lost), or an operator
// captures the jobs of a kind nobody serves.
type Stranded struct {
	Job *queue.StoredJob
	// Reason and Error say why it dies (overridden with malformed for a message that is not a
	// job).
	Reason, Error string
	// Worker names who settles it, for the DLQ copy.
	Worker string
	// Force dead-letters it even when its key is healthy or it never had a last chance (an
	// operator's capture).
	Force bool
	// RequeueID, when set, is the Nats-Msg-Id under which a healthy job is published again
	// as a new message (idempotency.StrandedRequeue).
	RequeueID string
}

// Remover removes a stranded message from the work stream once it is settled: a delete by
// sequence, or an ack through the consumer that holds it.
type Remover func(ctx context.Context) error

// SettleStranded settles a stranded job message through the one dead-letter path (design rule
// 32): the ledger decides (idempotency.Ledger.MarkDead): a job whose key succeeded is a
// duplicate; a healthy job, or one that never ran alone, is published again as a new message
// (unless forced); otherwise the job is recorded dead and copied to the DLQ. Only then is the
// message removed. Every step is idempotent, so a settle retried after a crash does no harm.
func SettleStranded(ctx context.Context, l *idempotency.Ledger, q *queue.Queue, s Stranded, remove Remover) (idempotency.StrandedAction, error) {
	job := s.Job
	reason, msg := s.Reason, s.Error
	if job.DecodeErr != nil {
		reason, msg = executor.ReasonMalformed, job.DecodeErr.Error()
	}
	if job.Env.ID == "" {
		return idempotency.StrandedDead, remove(ctx) // no id: nothing to record or copy it under
	}
	// A malformed message cannot be run, alone or not: no second chance.
	action, err := l.MarkDead(ctx, idempotency.Record{
		JobID: job.Env.ID, Kind: job.Env.Kind, Key: job.Env.Key, Reason: reason, Error: msg, EnqueuedAt: job.Env.EnqueuedAt,
	}, job.Seq, s.Force || job.DecodeErr != nil)
	if err != nil {
		return 0, err
	}
	switch action {
	case idempotency.StrandedRequeue:
		if s.RequeueID == "" {
			return action, fmt.Errorf("settle stranded job %s: it is healthy and would be published again, but no message id was given", job.Env.ID)
		}
		if err := q.Replay(ctx, job.Env, s.RequeueID); err != nil {
			return action, err
		}
	case idempotency.StrandedDead:
		err := q.DeadLetter(ctx, job.Env, job.Data, job.Header, queue.DeadInfo{
			Reason: reason, LastError: idempotency.Truncate(msg, maxCopyError), Worker: s.Worker, SourceSeq: job.Seq, FailedAt: time.Now(),
		})
		if err != nil {
			return action, err
		}
	}
	return action, remove(ctx)
}
