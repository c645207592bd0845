package idempotency

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// This file holds the operator's reads and writes of the scheduled table beyond the
// dispatcher's (scheduled.go): the listing of scheduled jobs, and a cancel that leaves the job
// in the ledger as dead with reason cancelled.

// listScheduledJobs is ListJobs for q.State StateScheduled: the scheduled jobs soonest due
// first, by (run_at, id), after (q.AfterAt, q.AfterID) if set. Since and Until bound when
// each was published. Each JobStatus has SortAt = RunAt, the listing's position. It reads the
// run_at index in order; a ledger from before migration 00007 has none.
func (l *Ledger) listScheduledJobs(ctx context.Context, q JobQuery) ([]JobStatus, error) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	var where []string
	if q.Kind != "" {
		where = append(where, "kind = "+arg(storableKind(q.Kind)))
	}
	if !q.Since.IsZero() {
		where = append(where, scheduledSortAt+" >= "+arg(q.Since))
	}
	if !q.Until.IsZero() {
		where = append(where, scheduledSortAt+" < "+arg(q.Until))
	}
	if !q.AfterAt.IsZero() {
		where = append(where, "(run_at, id) > ("+arg(q.AfterAt)+", "+arg(StorableText(q.AfterID))+")")
	}
	sql := "SELECT " + scheduledJobColumns + " FROM " + l.sanitized() + ".scheduled"
	if len(where) > 0 {
		sql += " WHERE " + strings.Join(where, " AND ")
	}
	sql += " ORDER BY run_at, id LIMIT " + arg(q.Limit)
	jobs, err := l.scanJobs(ctx, "list scheduled jobs", sql, args...)
	if isUndefinedTable(err) {
		return []JobStatus{}, nil
	}
	for i := range jobs {
		if jobs[i].RunAt != nil {
			jobs[i].SortAt = *jobs[i].RunAt
		}
	}
	return jobs, err
}

// CancelScheduledJob cancels job id while it waits in the scheduled table, in one
// transaction: it deletes the row, so that no dispatcher publishes it, and writes the job's
// key as dead with reason cancelled, owned by the job, as CancelQueued does for a job in the
// stream (message is its last error). When the key has a row of another job already, the job
// is recorded as an unowned dead job instead (AddRecords). It returns the row it deleted and
// what the cancel left, for the job's dead-letter copy.
//
// It returns ErrNotFound when no row waits (a dispatcher published the job meanwhile: its
// delete waits for the dispatcher's transaction, then finds nothing), and ErrNotApplicable
// (wrapped) when the job's key is owned by the job itself already (a dispatcher published it
// and died before deleting its row, and a worker claimed it): nothing is changed then.
func (l *Ledger) CancelScheduledJob(ctx context.Context, id, message string) (*ScheduledJob, *Cancelled, error) {
	var (
		j ScheduledJob
		c Cancelled
	)
	message = storableText(message, l.maxErrorBytes)
	s := l.sanitized()
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var err error
		j, err = scanScheduled(tx.QueryRow(ctx, `DELETE FROM `+s+`.scheduled WHERE id = $1 RETURNING `+scheduledColumns, id))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		c.LastError = message
		sum := sha256.Sum256(j.Payload) // the payload as it would be published: Envelope.PayloadHash
		req := ClaimRequest{JobID: j.ID, Kind: j.Kind, Key: j.Key, PayloadHash: sum[:], EnqueuedAt: j.CreatedAt}
		if invalidClaim(req) == "" {
			err = tx.QueryRow(ctx, l.insertCancelled(), req.Kind, req.Key, req.JobID, req.PayloadHash, ReasonCancelled,
				nilIfEmpty(message), req.EnqueuedAt, nil).Scan(&c.FirstFailedAt, &c.FinishedAt)
			if err == nil {
				return nil
			}
			if !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			var owner string
			err = tx.QueryRow(ctx, `SELECT job_id FROM `+s+`.keys WHERE kind = $1 AND key = $2`, req.Kind, req.Key).Scan(&owner)
			switch {
			case err == nil && owner == storableID(j.ID):
				return fmt.Errorf("cancel scheduled job %s: it was published and claimed meanwhile: %w", j.ID, ErrNotApplicable)
			case err != nil && !errors.Is(err, pgx.ErrNoRows):
				return err
			}
		}
		// The key belongs to another job: this one is recorded as dead without it.
		now := time.Now()
		c.FirstFailedAt, c.FinishedAt = now, now
		return addRecords(ctx, tx, l, []Record{{JobID: j.ID, Kind: j.Kind, Key: j.Key, State: StateDead,
			Reason: ReasonCancelled, Error: message, EnqueuedAt: j.CreatedAt}})
	})
	switch {
	case errors.Is(err, ErrNotFound), isUndefinedTable(err):
		return nil, nil, ErrNotFound
	case errors.Is(err, ErrNotApplicable):
		return nil, nil, err
	case err != nil:
		return nil, nil, fmt.Errorf("cancel scheduled job %s: %w", id, err)
	}
	return &j, &c, nil
}
