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
// replaces the stored payload hash (an operator's explicit payload change). A record of jobID
// as an unowned dead job is removed. It returns the key's state before: only a dead key is
// changed; a succeeded key stays succeeded, so a replayed job whose effect happened is acked
// as a duplicate and never run twice. "" means the ledger has no row for the key.
func (l *Ledger) Revive(ctx context.Context, kind, key, jobID string, newHash []byte) (State, error) {
	var before State
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, l.q.deleteRecord, jobID); err != nil {
			return err
		}
		var st, owner string
		err := tx.QueryRow(ctx, l.q.lockKeyOwner, kind, key).Scan(&st, &owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		before = State(st)
		if before != StateDead || owner != jobID {
			// Only the job that owns the dead key revives it: another job's history stays.
			return nil
		}
		_, err = tx.Exec(ctx, l.q.revive, kind, key, jobID, newHash)
		return err
	})
	if err != nil && !isUndefinedTable(err) {
		return "", fmt.Errorf("revive key %s/%s: %w", kind, key, err)
	}
	return before, nil
}

// MarkDead records job jobID as dead with reason without a claim (the max-deliveries safety
// net: no worker could finish it). If the job owns its key and the key is running or
// retrying, the key becomes dead (its fence moves on, so a worker still holding it writes
// nothing more); otherwise the job is recorded as an unowned dead job. It returns the key's
// state before; StateSucceeded means the job's effect is done and nothing was written.
func (l *Ledger) MarkDead(ctx context.Context, rec Record) (State, error) {
	var before State
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var st, owner string
		err := tx.QueryRow(ctx, l.q.lockKeyOwner, rec.Kind, rec.Key).Scan(&st, &owner)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			before = State(st)
		}
		if before == StateSucceeded {
			return nil
		}
		if owner == rec.JobID && (before == StateRunning || before == StateRetrying) {
			_, err := tx.Exec(ctx, l.q.markDead, rec.Kind, rec.Key, rec.Reason, Truncate(rec.Error, l.maxErrorBytes))
			return err
		}
		rec.State = StateDead
		return addRecords(ctx, tx, l, []Record{rec})
	})
	if err != nil {
		return "", fmt.Errorf("mark job %s dead: %w", rec.JobID, err)
	}
	return before, nil
}
