package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/levee-dev/levee/leveetype"
)

// JobStatus is what the ledger knows of one job id: the public status (its state is one of the
// ledger's: running, retrying, succeeded or dead) and what only the ledger needs.
type JobStatus struct {
	leveetype.JobStatus
	LeaseUntil *time.Time
	// FirstFailedAt is when an attempt on the key first failed (zero if none did).
	FirstFailedAt time.Time
	// SortAt orders job listings (ListJobs, FindByKey): the enqueued time, else the first
	// claim (keys) or the finish (records). Status leaves it zero.
	SortAt time.Time
}

// isUndefinedTable reports Postgres error 42P01: the schema has not been migrated.
func isUndefinedTable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P01"
}

// Status returns what the ledger knows of job id, or ErrNotFound. A job id that cannot be
// stored is looked up under its stand-in (see AddRecords).
func (l *Ledger) Status(ctx context.Context, id string) (*JobStatus, error) {
	id = storableID(id)
	var (
		st                          JobStatus
		src                         int
		state                       string
		reason, lastErr, res, dupOf *string
		fallOf, fallTo              *string
		firstFailed                 *time.Time
	)
	err := l.pool.QueryRow(ctx, l.q.status, id).Scan(&src, &st.ID, &st.Kind, &st.Key, &state, &st.Attempts,
		&reason, &lastErr, &res, &dupOf, &st.NextAttempt, &st.EnqueuedAt, &st.StartedAt, &st.FinishedAt, &st.LeaseUntil, &fallOf, &fallTo, &firstFailed)
	if errors.Is(err, pgx.ErrNoRows) {
		return l.scheduledStatus(ctx, id)
	}
	if isUndefinedTable(err) {
		// No ledger yet (no worker has migrated this namespace): not in the ledger.
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("status of job %q: %w", id, err)
	}
	st.State = State(state)
	st.Reason, st.LastError, st.DuplicateOf = deref(reason), deref(lastErr), deref(dupOf)
	st.FallbackOf, st.FallbackTo = deref(fallOf), deref(fallTo)
	if firstFailed != nil {
		st.FirstFailedAt = *firstFailed
	}
	if res != nil {
		st.Result = json.RawMessage(*res)
	}
	return &st, nil
}

// scheduledStatus is the status of a job that waits in the scheduled table, or ErrNotFound.
func (l *Ledger) scheduledStatus(ctx context.Context, id string) (*JobStatus, error) {
	j, err := l.ScheduledStatus(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &JobStatus{}
	st.State, st.ID, st.Kind, st.Key = leveetype.StateScheduled, j.ID, j.Kind, j.Key
	st.RunAt, st.EnqueuedAt = &j.RunAt, &j.CreatedAt
	st.LastError = j.LastError
	return st, nil
}
