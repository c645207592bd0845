package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// This file holds the operator's reads and writes of the ledger: job listing and search,
// attempt timelines, cancellation, the audit log and the dashboard's aggregate.

// JobQuery selects jobs for ListJobs. Zero fields select all.
type JobQuery struct {
	// State is one of the ledger's states (StateScheduled included), "" for any.
	State State
	Kind  string
	// Since and Until bound the job's enqueued time (its first claim time when unknown; a
	// scheduled job's publish time): Since <= t < Until.
	Since, Until time.Time
	// AfterAt and AfterID continue a listing after the row (AfterAt, AfterID) of the previous
	// page: keyset paging, newest first; with State StateScheduled, soonest due first, after
	// the row (RunAt, ID) = (AfterAt, AfterID).
	AfterAt time.Time
	AfterID string
	// Limit bounds the rows returned. Required.
	Limit int
}

// jobColumns are the columns every job listing selects, in queryJobs's order: the 18th is
// the listing's sort time, the 19th a scheduled job's run_at.
const (
	keyJobColumns = `job_id, kind, key, state, attempts, reason, last_error, result::text, NULL::text,
        next_attempt_at, enqueued_at, started_at, finished_at, lease_until, fallback_of, fallback_to, first_failed_at,
        COALESCE(enqueued_at, created_at), NULL::timestamptz`
	recordJobColumns = `id, kind, key, state, 0, reason, last_error, NULL::text, duplicate_of,
        NULL::timestamptz, enqueued_at, NULL::timestamptz, finished_at, NULL::timestamptz, NULL::text, NULL::text, finished_at,
        COALESCE(enqueued_at, finished_at), NULL::timestamptz`
	// A scheduled job (design rule 42) reads as state scheduled, enqueued when it was
	// published, with its dispatch error as its last error.
	scheduledJobColumns = `id, kind, key, 'scheduled'::text, 0, NULL::text, last_error, NULL::text, NULL::text,
        NULL::timestamptz, created_at, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::text, NULL::text, NULL::timestamptz,
        created_at, run_at`
	keySortAt       = `COALESCE(enqueued_at, created_at)`
	recordSortAt    = `COALESCE(enqueued_at, finished_at)`
	scheduledSortAt = `created_at`
)

// ListJobs returns up to q.Limit jobs, newest first by (SortAt, JobID): the keys the jobs own,
// the records of jobs that finished without owning theirs, and the scheduled jobs (by when
// they were published). Each table is read by one index scan in listing order (never
// OFFSET, never a count), and they are merged. With q.State StateScheduled it returns the
// scheduled jobs alone, soonest due first (see listScheduledJobs).
func (l *Ledger) ListJobs(ctx context.Context, q JobQuery) ([]JobStatus, error) {
	if q.Limit <= 0 {
		return nil, errors.New("list jobs: limit must be positive")
	}
	if q.State == leveetype.StateScheduled {
		return l.listScheduledJobs(ctx, q)
	}
	jobs, err := l.listJobs(ctx, q, q.State == "")
	if isUndefinedTable(err) && q.State == "" {
		// A ledger migrated before scheduled jobs existed (migration 00007): list the rest.
		jobs, err = l.listJobs(ctx, q, false)
	}
	if isUndefinedTable(err) {
		return []JobStatus{}, nil // not migrated at all: no jobs
	}
	return jobs, err
}

// listJobs is ListJobs over the keys and job_records tables, and the scheduled table too if
// withScheduled.
func (l *Ledger) listJobs(ctx context.Context, q JobQuery, withScheduled bool) ([]JobStatus, error) {
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	arm := func(table, cols, sortAt, idCol string) string {
		var where []string
		if q.State != "" && table != "scheduled" {
			where = append(where, "state = "+arg(StorableText(string(q.State))))
		}
		if q.Kind != "" {
			where = append(where, "kind = "+arg(storableKind(q.Kind)))
		}
		if !q.Since.IsZero() {
			where = append(where, sortAt+" >= "+arg(q.Since))
		}
		if !q.Until.IsZero() {
			where = append(where, sortAt+" < "+arg(q.Until))
		}
		if !q.AfterAt.IsZero() {
			where = append(where, "("+sortAt+", "+idCol+") < ("+arg(q.AfterAt)+", "+arg(StorableText(q.AfterID))+")")
		}
		sql := "SELECT " + cols + " FROM " + l.sanitized() + "." + table
		if len(where) > 0 {
			sql += " WHERE " + strings.Join(where, " AND ")
		}
		return "(" + sql + " ORDER BY " + sortAt + " DESC, " + idCol + " DESC LIMIT " + arg(q.Limit) + ")"
	}
	arms := []string{arm("keys", keyJobColumns, keySortAt, "job_id")}
	if q.State == "" || q.State == StateSucceeded || q.State == StateDead {
		arms = append(arms, arm("job_records", recordJobColumns, recordSortAt, "id"))
	}
	if withScheduled {
		arms = append(arms, arm("scheduled", scheduledJobColumns, scheduledSortAt, "id"))
	}
	sql := "SELECT * FROM (" + strings.Join(arms, " UNION ALL ") + ") AS j ORDER BY 18 DESC, 1 DESC LIMIT " + arg(q.Limit)
	return l.scanJobs(ctx, "list jobs", sql, args...)
}

// FindByKey returns the jobs that used idempotency key, in every kind, newest first: the
// key's owner in each kind, the jobs recorded against it (duplicates, payload mismatches)
// and the scheduled jobs that will use it. The keys table is searched kind by kind through
// its primary key (a loose index scan over the kinds), so no index on the key alone is
// needed on the hot path; the scheduled table, which holds only the jobs still waiting, is
// scanned. A key that cannot be stored is searched as AddRecords stores it.
func (l *Ledger) FindByKey(ctx context.Context, key string) ([]JobStatus, error) {
	if !storableName(key, queue.MaxKeyLen) {
		key = storableKey(key)
	}
	jobs, err := l.findByKey(ctx, key, true)
	if isUndefinedTable(err) {
		jobs, err = l.findByKey(ctx, key, false) // a ledger from before migration 00007
	}
	if isUndefinedTable(err) {
		return []JobStatus{}, nil
	}
	return jobs, err
}

func (l *Ledger) findByKey(ctx context.Context, key string, withScheduled bool) ([]JobStatus, error) {
	s := l.sanitized()
	scheduled := ""
	if withScheduled {
		scheduled = `
    UNION ALL
    SELECT ` + scheduledJobColumns + ` FROM ` + s + `.scheduled WHERE key = $1`
	}
	sql := `
WITH RECURSIVE kinds AS (
    (SELECT kind FROM ` + s + `.keys ORDER BY kind LIMIT 1)
    UNION ALL
    SELECT (SELECT k.kind FROM ` + s + `.keys k WHERE k.kind > kinds.kind ORDER BY k.kind LIMIT 1)
    FROM kinds WHERE kinds.kind IS NOT NULL
)
SELECT * FROM (
    SELECT ` + keyJobColumns + ` FROM ` + s + `.keys WHERE kind IN (SELECT kind FROM kinds WHERE kind IS NOT NULL) AND key = $1
    UNION ALL
    SELECT ` + recordJobColumns + ` FROM ` + s + `.job_records WHERE key = $1` + scheduled + `
) AS j ORDER BY 18 DESC, 1 DESC LIMIT 100`
	return l.scanJobs(ctx, "find key "+strconv.Quote(key), sql, key)
}

// scanJobs runs a job listing's sql, whose columns are keyJobColumns's, and reads its rows.
// Its error wraps Postgres's (isUndefinedTable tells an unmigrated ledger).
func (l *Ledger) scanJobs(ctx context.Context, what, sql string, args ...any) ([]JobStatus, error) {
	rows, err := l.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	jobs := []JobStatus{}
	for rows.Next() {
		var (
			st                          JobStatus
			state                       string
			reason, lastErr, res, dupOf *string
			fallOf, fallTo              *string
			firstFailed                 *time.Time
		)
		if err := rows.Scan(&st.ID, &st.Kind, &st.Key, &state, &st.Attempts, &reason, &lastErr, &res, &dupOf,
			&st.NextAttempt, &st.EnqueuedAt, &st.StartedAt, &st.FinishedAt, &st.LeaseUntil, &fallOf, &fallTo,
			&firstFailed, &st.SortAt, &st.RunAt); err != nil {
			return nil, fmt.Errorf("%s: scan: %w", what, err)
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
		jobs = append(jobs, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return jobs, nil
}

// Attempts returns the attempts of job id, oldest first. A job whose key is running right now
// gets a last row for the attempt in progress (outcome "running", no FinishedAt); a job that
// succeeded gets its successful attempt from its key (the attempts table holds the others).
func (l *Ledger) Attempts(ctx context.Context, id string) ([]leveetype.Attempt, error) {
	id = storableID(id)
	s := l.sanitized()
	rows, err := l.pool.Query(ctx, `
SELECT n, started_at, finished_at, outcome, COALESCE(error, ''), COALESCE(worker, '') FROM (
    SELECT n, started_at, finished_at, outcome, error, worker, fence FROM `+s+`.attempts
    WHERE job_id = $1 AND outcome <> 'succeeded' -- written before migration 00005; the key has it
    UNION ALL
    SELECT attempts, COALESCE(started_at, updated_at), NULL, 'running', NULL, NULL, fence
    FROM `+s+`.keys WHERE job_id = $1 AND state = 'running'
    UNION ALL
    SELECT k.attempts, COALESCE(k.started_at, k.finished_at), k.finished_at, 'succeeded', NULL,
        COALESCE(k.worker, (SELECT a.worker FROM `+s+`.attempts a WHERE a.job_id = k.job_id AND a.fence = k.fence)), k.fence
    FROM `+s+`.keys k WHERE k.job_id = $1 AND k.state = 'succeeded'
) AS a ORDER BY fence, started_at`, id)
	if err != nil {
		if isUndefinedTable(err) {
			return []leveetype.Attempt{}, nil
		}
		return nil, fmt.Errorf("attempts of job %q: %w", id, err)
	}
	out := []leveetype.Attempt{}
	var a leveetype.Attempt
	_, err = pgx.ForEachRow(rows, []any{&a.N, &a.StartedAt, &a.FinishedAt, &a.Outcome, &a.Error, &a.Worker}, func() error {
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("attempts of job %q: %w", id, err)
	}
	return out, nil
}

// ReasonCancelled is the dead reason of a job an operator cancelled.
const ReasonCancelled = leveetype.ReasonCancelled

// Cancelled is what a cancel left behind, for the job's dead-letter copy.
type Cancelled struct {
	Attempts      int
	LastError     string
	FirstFailedAt time.Time
	FinishedAt    time.Time
}

// ErrNotApplicable is returned (wrapped) by operator writes whose condition no longer holds:
// the key is not in the state the operator saw, or belongs to another job.
var ErrNotApplicable = errors.New("the key is not in the expected state")

// CancelRetrying makes the retrying key that jobID owns dead with reason cancelled, moving
// its fence on. It returns ErrNotApplicable (wrapped) when the key is not retrying under
// jobID (a worker claimed it meanwhile, say).
func (l *Ledger) CancelRetrying(ctx context.Context, kind, key, jobID, message string) (*Cancelled, error) {
	if !storableLease(Lease{Kind: kind, Key: key}) {
		return nil, fmt.Errorf("cancel job %s: %w", storableID(jobID), ErrNotApplicable)
	}
	jobID = storableID(jobID)
	var c Cancelled
	err := l.pool.QueryRow(ctx, `
UPDATE `+l.sanitized()+`.keys SET state = 'dead', reason = $4, last_error = COALESCE($5, last_error),
    lease_until = NULL, next_attempt_at = NULL, finished_at = now(), fence = fence + 1, updated_at = now()
WHERE kind = $1 AND key = $2 AND job_id = $3 AND state = 'retrying'
RETURNING attempts, COALESCE(last_error, ''), COALESCE(first_failed_at, now()), finished_at`,
		kind, key, jobID, ReasonCancelled, nilIfEmpty(storableText(message, l.maxErrorBytes))).Scan(&c.Attempts, &c.LastError, &c.FirstFailedAt, &c.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("cancel job %s: %w", jobID, ErrNotApplicable)
	}
	if err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", jobID, err)
	}
	return &c, nil
}

// CancelQueued writes the key of a job that no worker has claimed yet as dead with reason
// cancelled, owned by the job, so that its delivery finds the key dead and terminates the
// message without running it. It returns ErrNotApplicable (wrapped) when the key has a row
// already (claimed meanwhile, or used by another job), and an error saying why when req
// could not be claimed either (Claim's Invalid: its delivery is dead-lettered as malformed).
func (l *Ledger) CancelQueued(ctx context.Context, req ClaimRequest, message string) (*Cancelled, error) {
	if why := invalidClaim(req); why != "" {
		return nil, fmt.Errorf("cancel job %s: the ledger cannot store it: %s", storableID(req.JobID), why)
	}
	message = storableText(message, l.maxErrorBytes)
	var c Cancelled
	err := l.pool.QueryRow(ctx, l.insertCancelled(), req.Kind, req.Key, req.JobID, req.PayloadHash, ReasonCancelled,
		nilIfEmpty(message), req.EnqueuedAt, nilIfEmpty(req.FallbackOf)).Scan(&c.FirstFailedAt, &c.FinishedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("cancel job %s: %w", req.JobID, ErrNotApplicable)
	}
	if err != nil {
		return nil, fmt.Errorf("cancel job %s: %w", req.JobID, err)
	}
	c.LastError = message
	return &c, nil
}

// insertCancelled writes a key as dead with reason cancelled, owned by a job no worker has
// claimed, unless the key has a row: CancelQueued's statement, and CancelScheduledJob's.
// Arguments: kind, key, job id, payload hash, reason, message, enqueued time, fallback_of.
func (l *Ledger) insertCancelled() string {
	return `
INSERT INTO ` + l.sanitized() + `.keys (kind, key, job_id, payload_hash, state, fence, attempts, reason, last_error,
    enqueued_at, first_failed_at, finished_at, fallback_of)
VALUES ($1, $2, $3, $4, 'dead', 1, 0, $5, $6, LEAST($7::timestamptz, now()), now(), now(), $8)
ON CONFLICT (kind, key) DO NOTHING
RETURNING first_failed_at, finished_at`
}

// MakeDue makes the retrying key that jobID owns due at once. It returns ErrNotApplicable
// (wrapped) when the key is not retrying under jobID.
func (l *Ledger) MakeDue(ctx context.Context, kind, key, jobID string) error {
	if !storableLease(Lease{Kind: kind, Key: key}) {
		return fmt.Errorf("make job %s due: %w", storableID(jobID), ErrNotApplicable)
	}
	jobID = storableID(jobID)
	tag, err := l.pool.Exec(ctx, `
UPDATE `+l.sanitized()+`.keys SET next_attempt_at = now(), updated_at = now()
WHERE kind = $1 AND key = $2 AND job_id = $3 AND state = 'retrying'`, kind, key, jobID)
	if err != nil {
		return fmt.Errorf("make job %s due: %w", jobID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("make job %s due: %w", jobID, ErrNotApplicable)
	}
	return nil
}

// sanitized is the ledger's schema, quoted for SQL.
func (l *Ledger) sanitized() string { return pgx.Identifier{l.schema}.Sanitize() }

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// Audit appends an entry to the audit log, its texts made storable (design rule 28).
func (l *Ledger) Audit(ctx context.Context, actor, action, target, detail string) error {
	actor, action, target, detail = StorableText(actor), StorableText(action), StorableText(target), StorableText(detail)
	_, err := l.pool.Exec(ctx, `INSERT INTO `+l.sanitized()+`.audit_log (actor, action, target, detail) VALUES ($1, $2, $3, $4)`,
		actor, action, target, detail)
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", action, target, err)
	}
	return nil
}

// AuditLog returns the newest limit entries of the audit log, newest first.
func (l *Ledger) AuditLog(ctx context.Context, limit int) ([]leveetype.AuditEntry, error) {
	rows, err := l.pool.Query(ctx, `SELECT at, actor, action, target, detail FROM `+l.sanitized()+`.audit_log ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		if isUndefinedTable(err) {
			return []leveetype.AuditEntry{}, nil
		}
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out := []leveetype.AuditEntry{}
	var e leveetype.AuditEntry
	_, err = pgx.ForEachRow(rows, []any{&e.At, &e.Actor, &e.Action, &e.Target, &e.Detail}, func() error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// KindActivity is one kind's attempts over the last hour.
type KindActivity struct {
	Succeeded, Failed      int
	AttemptP50, AttemptP95 time.Duration
	// LastMinute counts the attempts that finished in the last minute.
	LastMinute int
}

// MinuteActivity counts the attempts that finished in one minute.
type MinuteActivity struct {
	Start             time.Time
	Succeeded, Failed int
}

// Aggregate is the dashboard's view of the ledger, computed by one statement.
type Aggregate struct {
	// Counts holds the jobs by state: keys by their state, plus the jobs recorded without
	// owning a key (duplicates as succeeded, the others as dead).
	Counts  map[State]int64
	Kinds   map[string]KindActivity
	Minutes []MinuteActivity
	At      time.Time
	// Scheduled counts the jobs waiting in the scheduled table, per kind (CountScheduled).
	Scheduled map[string]int64
}

// Aggregate computes the dashboard's counts in one statement: jobs by state (a scan of the
// keys and job_records tables, so callers cache it: see levee.Client.Overview), and per kind
// and per minute the attempts of the last hour (an index range scan on attempts). A second
// statement counts the scheduled jobs per kind (counted as state scheduled too).
func (l *Ledger) Aggregate(ctx context.Context) (*Aggregate, error) {
	agg, err := l.aggregate(ctx)
	if err != nil {
		return nil, err
	}
	if agg.Scheduled, err = l.CountScheduled(ctx); err != nil {
		return nil, fmt.Errorf("aggregate the ledger: %w", err)
	}
	for _, n := range agg.Scheduled {
		agg.Counts[leveetype.StateScheduled] += n
	}
	return agg, nil
}

func (l *Ledger) aggregate(ctx context.Context) (*Aggregate, error) {
	s := l.sanitized()
	rows, err := l.pool.Query(ctx, `
WITH a AS (
    SELECT kind, outcome, finished_at, extract(epoch FROM finished_at - started_at)::float8 AS secs
    FROM `+s+`.attempts WHERE finished_at > now() - interval '1 hour'
        AND outcome NOT IN ('replayed', 'succeeded') -- a replay is no attempt; successes are keys
    UNION ALL
    SELECT kind, 'succeeded', finished_at, extract(epoch FROM finished_at - COALESCE(started_at, finished_at))::float8
    FROM `+s+`.keys WHERE state = 'succeeded' AND finished_at > now() - interval '1 hour'
)
SELECT 'state', state, NULL::timestamptz, count(*), 0::bigint, 0::float8, 0::float8, 0::bigint FROM `+s+`.keys GROUP BY state
UNION ALL
SELECT 'state', state, NULL, count(*), 0, 0, 0, 0 FROM `+s+`.job_records GROUP BY state
UNION ALL
SELECT 'kind', kind, NULL,
    count(*) FILTER (WHERE outcome = 'succeeded'),
    count(*) FILTER (WHERE outcome NOT IN ('succeeded', 'released')),
    percentile_cont(0.5) WITHIN GROUP (ORDER BY secs),
    percentile_cont(0.95) WITHIN GROUP (ORDER BY secs),
    count(*) FILTER (WHERE finished_at > now() - interval '1 minute')
FROM a GROUP BY kind
UNION ALL
SELECT 'minute', NULL, date_trunc('minute', finished_at),
    count(*) FILTER (WHERE outcome = 'succeeded'),
    count(*) FILTER (WHERE outcome NOT IN ('succeeded', 'released')), 0, 0, 0
FROM a GROUP BY 3
UNION ALL
SELECT 'now', NULL, now(), 0, 0, 0, 0, 0`)
	if isUndefinedTable(err) {
		return &Aggregate{Counts: map[State]int64{}, Kinds: map[string]KindActivity{}, At: time.Now()}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate the ledger: %w", err)
	}
	agg := &Aggregate{Counts: map[State]int64{}, Kinds: map[string]KindActivity{}}
	var (
		what   string
		name   *string
		at     *time.Time
		n1, n2 int64
		f1, f2 float64
		n3     int64
	)
	_, err = pgx.ForEachRow(rows, []any{&what, &name, &at, &n1, &n2, &f1, &f2, &n3}, func() error {
		switch what {
		case "state":
			agg.Counts[State(deref(name))] += n1
		case "kind":
			agg.Kinds[deref(name)] = KindActivity{Succeeded: int(n1), Failed: int(n2),
				AttemptP50: seconds(f1), AttemptP95: seconds(f2), LastMinute: int(n3)}
		case "minute":
			agg.Minutes = append(agg.Minutes, MinuteActivity{Start: *at, Succeeded: int(n1), Failed: int(n2)})
		case "now":
			agg.At = *at
		}
		return nil
	})
	if isUndefinedTable(err) {
		return &Aggregate{Counts: map[State]int64{}, Kinds: map[string]KindActivity{}, At: time.Now()}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("aggregate the ledger: %w", err)
	}
	return agg, nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
