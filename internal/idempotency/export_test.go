package idempotency

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// NoLockRetries turns off l's retries of a statement that met a deadlock or a serialization
// failure, so that a test sees every one.
func NoLockRetries(l *Ledger) { l.lockRetries = 0 }

// Statements returns l's SQL for the statements that lock several keys.
func Statements(l *Ledger) map[string]string {
	return map[string]string{"claim": l.q.claim, "heartbeat": l.q.heartbeat, "finish": l.q.finish, "reapKeys": l.q.reapKeys}
}

// JSONAsIs is StorableJSON's fast path.
var JSONAsIs = jsonAsIs

// ListScheduled returns the scheduled rows in run_at order, for tests (the operator's listing
// is ListJobs with the scheduled state).
func ListScheduled(ctx context.Context, l *Ledger) ([]ScheduledJob, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+scheduledColumns+` FROM `+l.sanitized()+`.scheduled ORDER BY run_at, id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ScheduledJob, error) { return scanScheduled(r) })
}
