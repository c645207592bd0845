package idempotency

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// JobStatus is what the ledger knows of one job id.
type JobStatus struct {
	JobID     string
	Kind      string
	Key       string
	State     State
	Attempts  int
	Reason    string
	LastError string
	// Result is the handler's JSON result for succeeded jobs (for a duplicate, the result of
	// the job that did the work).
	Result []byte
	// DuplicateOf is the id of the job that did the work, when this job was a duplicate.
	DuplicateOf string
	// FallbackOf is the job this one replaces; FallbackTo the job that replaced this one.
	FallbackOf    string
	FallbackTo    string
	NextAttemptAt *time.Time
	EnqueuedAt    *time.Time
	StartedAt     *time.Time
	FinishedAt    *time.Time
	LeaseUntil    *time.Time
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
	err := l.pool.QueryRow(ctx, l.q.status, id).Scan(&src, &st.JobID, &st.Kind, &st.Key, &state, &st.Attempts,
		&reason, &lastErr, &res, &dupOf, &st.NextAttemptAt, &st.EnqueuedAt, &st.StartedAt, &st.FinishedAt, &st.LeaseUntil, &fallOf, &fallTo, &firstFailed)
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		// No row, or no ledger yet (no worker has migrated this namespace): not in the ledger.
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
		st.Result = []byte(*res)
	}
	return &st, nil
}
