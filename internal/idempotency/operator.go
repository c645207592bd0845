package idempotency

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Revive makes the dead key of a job claimable again, for a replay: the key becomes retrying
// with a fresh attempt budget and its fence moves on. Only a key that jobID owns is revived;
// a job that died without owning its key (a payload mismatch, say) leaves the key alone. newHash, when not nil,
// replaces the stored payload hash (an operator's explicit payload change); by, who replays,
// is kept on the "replayed" row it adds to the job's attempts. A record of jobID
// as an unowned dead job is removed. It returns the key's state before: only a dead key is
// changed; a succeeded key stays succeeded, so a replayed job whose effect happened is acked
// as a duplicate and never run twice. "" means the ledger has no row for the key (as for a
// key that cannot be stored, design rule 28).
func (l *Ledger) Revive(ctx context.Context, kind, key, jobID string, newHash []byte, by string) (before State, owner string, err error) {
	if !storableLease(Lease{Kind: kind, Key: key}) {
		return "", "", nil
	}
	jobID = storableID(jobID)
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var st string
		err := tx.QueryRow(ctx, l.q.lockKeyOwner, kind, key).Scan(&st, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		before = State(st)
		if before == StateDead && owner != jobID {
			// Dead under another job: its history stays, and replaying this job changes
			// nothing (the caller says so).
			return nil
		}
		if _, err := tx.Exec(ctx, l.q.deleteRecord, jobID); err != nil {
			return err
		}
		// A replayed job gets its last chance and its requeues afresh.
		if _, err := tx.Exec(ctx, l.q.forgetLastChance, jobID); err != nil {
			return err
		}
		if before != StateDead {
			return nil
		}
		// The key's last error goes with its old life; the attempts keep it, after which a
		// "replayed" row (n 0, worker: who replayed) marks where the new life starts.
		_, err = tx.Exec(ctx, l.q.revive, kind, key, jobID, newHash, StorableText(by))
		return err
	})
	if err != nil && !isUndefinedTable(err) {
		return "", "", fmt.Errorf("revive key %s/%s: %w", kind, key, err)
	}
	return before, owner, nil
}

// Verdict of MarkDead.
type StrandedAction int

const (
	// StrandedDead: the job was marked dead (its own stuck key, or a record).
	StrandedDead StrandedAction = iota + 1
	// StrandedDone: its key already succeeded; a duplicate record was written if another job
	// did the work. Nothing is dead-lettered.
	StrandedDone
	// StrandedRequeue: its key is healthy (retrying, or running under a live lease): the job
	// is not stuck, only out of deliveries. Nothing was written; publish it again.
	StrandedRequeue
)

// MaxRequeues bounds how often MarkDead publishes again a job that ran out of deliveries
// without ever having run alone in a worker (see MarkSolo).
const MaxRequeues = 2

// MarkSolo records that a worker is about to run job jobID alone in its process, as the last
// chance of its message seq (the message's sequence in the work stream) on its last delivery,
// or of a job whose attempts were lost with their workers. If that message's deliveries still
// run out, the job crashed or hung a worker while nothing else ran there, and MarkDead
// dead-letters it.
func (l *Ledger) MarkSolo(ctx context.Context, jobID, kind string, seq uint64) error {
	if _, err := l.pool.Exec(ctx, l.q.markSolo, storableID(jobID), storableKey(kind), int64(seq)); err != nil {
		return fmt.Errorf("mark last chance of job %s: %w", jobID, err)
	}
	return nil
}

// PayloadHash returns the payload hash stored for kind's key (nil when the key has no row): what
// a replay compares a payload given in place of a truncated dead-letter copy's with.
func (l *Ledger) PayloadHash(ctx context.Context, kind, key string) ([]byte, error) {
	var h []byte
	err := l.pool.QueryRow(ctx, `SELECT payload_hash FROM `+l.sanitized()+`.keys WHERE kind = $1 AND key = $2`,
		storableKey(kind), storableKey(key)).Scan(&h)
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("payload hash of key %s/%s: %w", kind, key, err)
	}
	return h, nil
}

// UnmarkSolo takes back MarkSolo's mark of message seq: the job's run alone ended without
// telling anything about it (its worker lost Postgres and cancelled it), so its deliveries
// running out must not condemn it as a poison.
func (l *Ledger) UnmarkSolo(ctx context.Context, jobID string, seq uint64) error {
	if _, err := l.pool.Exec(ctx, l.q.unmarkSolo, storableID(jobID), int64(seq)); err != nil {
		return fmt.Errorf("take back the last-chance mark of job %s: %w", jobID, err)
	}
	return nil
}

// MarkDead settles a job whose message seq ran out of deliveries without an outcome (the
// max-deliveries safety net). A job whose key is healthy (retrying, or running under a live lease, whoever
// owns it) is not dead: StrandedRequeue, nothing written, so a long outage or a busy key never
// dead-letters a healthy job. A key that already succeeded makes the job a duplicate
// (StrandedDone). A job whose message seq never ran alone in a worker (no MarkSolo of seq)
// was perhaps only a bystander of a message that crashed the workers holding both:
// StrandedRequeue, counted once per seq, at most MaxRequeues times. Otherwise (no key row, its own key running with an expired lease: a
// crash loop, or a dead key) the job is dead with rec.Reason: its own running key becomes dead
// with its fence moved on, or it is recorded as an unowned dead job. With force (an
// operator's capture of jobs nobody serves) neither a healthy key nor a missing last chance
// saves the job. Texts are made storable (design rule 28): a job id or key that cannot be
// stored is recorded as AddRecords records it, and such a key has no row.
func (l *Ledger) MarkDead(ctx context.Context, rec Record, seq uint64, force bool) (StrandedAction, error) {
	var action StrandedAction
	keyed := storableLease(Lease{Kind: rec.Kind, Key: rec.Key})
	rec = storableRecord(rec)
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var (
			st, owner string
			leaseLive bool
			before    State
		)
		err := pgx.ErrNoRows
		if keyed {
			err = tx.QueryRow(ctx, l.q.lockKeyLease, rec.Kind, rec.Key).Scan(&st, &owner, &leaseLive)
		}
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			before = State(st)
		}
		switch {
		case before == StateSucceeded:
			action = StrandedDone
			if owner == rec.JobID {
				return nil
			}
			return addRecords(ctx, tx, l, []Record{{JobID: rec.JobID, Kind: rec.Kind, Key: rec.Key,
				State: StateSucceeded, DuplicateOf: owner, EnqueuedAt: rec.EnqueuedAt}})
		case !force && (before == StateRetrying || before == StateRunning && leaseLive):
			action = StrandedRequeue
			return nil
		}
		if !force && before != StateDead {
			// Did the job have its last chance alone in a worker? If not, the workers that
			// held it may have crashed on something else: publish it again (a few times).
			var solo, again bool
			var requeues int
			err := tx.QueryRow(ctx, l.q.lockLastChance, rec.JobID, int64(seq)).Scan(&solo, &requeues, &again)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			if !solo && (requeues < MaxRequeues || again) {
				action = StrandedRequeue
				_, err := tx.Exec(ctx, l.q.addRequeue, rec.JobID, rec.Kind, int64(seq))
				return err
			}
		}
		switch {
		case (before == StateRunning || before == StateRetrying) && owner == rec.JobID:
			action = StrandedDead
			_, err := tx.Exec(ctx, l.q.markDead, rec.Kind, rec.Key, StorableText(rec.Reason), storableText(rec.Error, l.maxErrorBytes))
			return err
		}
		action = StrandedDead
		rec.State = StateDead
		return addRecords(ctx, tx, l, []Record{rec})
	})
	if err != nil {
		return 0, fmt.Errorf("mark job %s dead: %w", rec.JobID, err)
	}
	return action, nil
}
