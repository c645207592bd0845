package idempotency

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The origins of a scheduled row: a delayed publish, a publish in the caller's transaction,
// or a periodic job's tick.
const (
	OriginDelay    = "delay"
	OriginTx       = "tx"
	OriginPeriodic = "periodic"
)

// ScheduledJob is one job waiting in the ledger to be published (design rule 42).
type ScheduledJob struct {
	ID, Kind, Key string
	// Payload is the job's compact JSON, as it will be published.
	Payload     []byte
	MaxAttempts int
	// RunAt is when the job is due. Zero when inserting means now (the transaction's time).
	RunAt     time.Time
	Origin    string
	Periodic  string // the periodic job's name, for a tick
	CreatedAt time.Time
	// DispatchErrors counts the publishes of the job that failed; LastError is the last one's.
	DispatchErrors int
	LastError      string
}

// DBTX is what Outbox.Insert writes through: a pgx.Tx (the row then exists only if that
// transaction commits), a *pgx.Conn, a *pgxpool.Pool or a *pgxpool.Conn.
type DBTX interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Outbox writes scheduled rows into one namespace's schema. It holds no connection, so a
// client that has no pool of its own can write into its caller's transaction.
type Outbox struct {
	insert, notify string
	channel        string
}

// ErrNotScheduled is returned (wrapped) when the ledger has no scheduled table: no worker of
// a version that knows delayed jobs has migrated the namespace yet.
var ErrNotScheduled = errors.New("the ledger has no table for scheduled jobs: start a worker of this version, or run `worker migrate`, first")

// NewOutbox returns an Outbox for the schema (the namespace).
func NewOutbox(schema string) *Outbox {
	s := func(q string) string { return strings.ReplaceAll(q, "S.", pgx.Identifier{schema}.Sanitize()+".") }
	return &Outbox{
		insert: s(`
INSERT INTO S.scheduled (id, kind, key, payload, max_attempts, run_at, origin, periodic)
SELECT id, kind, key, payload, max_attempts, COALESCE(run_at, now()), origin, NULLIF(periodic, '')
FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::int[], $6::timestamptz[], $7::text[], $8::text[])
    AS r(id, kind, key, payload, max_attempts, run_at, origin, periodic)
ON CONFLICT (id) DO NOTHING
RETURNING id, run_at`),
		notify:  `SELECT pg_notify($1, '')::text`,
		channel: DueChannel(schema),
	}
}

// DueChannel is the LISTEN/NOTIFY channel on which the dispatchers of the namespace in schema
// are told that a job was scheduled (design rule 43).
func DueChannel(schema string) string {
	ch := "levee_due:" + schema
	if len(ch) <= 63 { // Postgres truncates longer identifiers
		return ch
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(schema))
	return fmt.Sprintf("levee_due:%x", h.Sum64())
}

// Insert stores jobs in db and tells the dispatchers (the notification is delivered when db's
// transaction commits, and never if it rolls back). runAt[i] is the stored due time of jobs[i],
// zero where the id was scheduled already (the job is then stored once, as first written).
func (o *Outbox) Insert(ctx context.Context, db DBTX, jobs []ScheduledJob) (runAt []time.Time, err error) {
	runAt = make([]time.Time, len(jobs))
	if len(jobs) == 0 {
		return runAt, nil
	}
	n := len(jobs)
	ids, kinds, keys := make([]string, n), make([]string, n), make([]string, n)
	payloads := make([][]byte, n)
	maxAtt := make([]int32, n)
	at := make([]*time.Time, n)
	origins, periodic := make([]string, n), make([]string, n)
	for i, j := range jobs {
		ids[i], kinds[i], keys[i], payloads[i] = j.ID, j.Kind, j.Key, j.Payload
		maxAtt[i], origins[i], periodic[i] = int32(j.MaxAttempts), j.Origin, j.Periodic
		if !j.RunAt.IsZero() {
			t := j.RunAt
			at[i] = &t
		}
	}
	b := &pgx.Batch{}
	b.Queue(o.insert, ids, kinds, keys, payloads, maxAtt, at, origins, periodic)
	b.Queue(o.notify, o.channel)
	br := db.SendBatch(ctx, b)
	stored := make(map[string]time.Time, n)
	rows, err := br.Query()
	if err == nil {
		for rows.Next() {
			var id string
			var t time.Time
			if err = rows.Scan(&id, &t); err != nil {
				break
			}
			stored[id] = t
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if isUndefinedTable(err) {
		return nil, ErrNotScheduled
	}
	if err != nil {
		return nil, fmt.Errorf("schedule %d jobs: %w", n, err)
	}
	for i, j := range jobs {
		runAt[i] = stored[j.ID]
		delete(stored, j.ID) // a second job with the same id in one call was not stored
	}
	return runAt, nil
}

// Schedule stores jobs on the ledger's own pool; see Outbox.Insert.
func (l *Ledger) Schedule(ctx context.Context, jobs []ScheduledJob) ([]time.Time, error) {
	return l.outbox.Insert(ctx, l.pool, jobs)
}

// Outbox returns the ledger's outbox, for inserts into a caller's transaction.
func (l *Ledger) Outbox() *Outbox { return l.outbox }

// DueChannel is the channel the ledger's dispatchers listen on.
func (l *Ledger) DueChannel() string { return l.outbox.channel }

// DispatchDue takes at most limit due jobs that no other dispatcher holds (FOR UPDATE SKIP
// LOCKED), in run_at order, calls publish with them while holding their rows, deletes the
// rows publish published and counts a failure on the others, and commits (design rule 42).
// A dispatcher that dies inside publish leaves the rows to the next one: the stream drops a
// second publish of an id within its duplicate window, and the ledger's claim a later one.
// It returns how many jobs it took, and those it published.
func (l *Ledger) DispatchDue(ctx context.Context, limit int, publish func(jobs []ScheduledJob) []error) (taken int, published []Dispatched, err error) {
	err = pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, l.q.dueJobs, limit)
		if err != nil {
			return err
		}
		var jobs []ScheduledJob
		var late []time.Duration
		var j ScheduledJob
		var lateS float64
		_, err = pgx.ForEachRow(rows, []any{&j.ID, &j.Kind, &j.Key, &j.Payload, &j.MaxAttempts, &j.RunAt, &j.Origin, &lateS}, func() error {
			jobs = append(jobs, j)
			late = append(late, time.Duration(lateS*float64(time.Second)))
			return nil
		})
		if err != nil || len(jobs) == 0 {
			return err
		}
		taken = len(jobs)
		errs := publish(jobs)
		var done, failed, msgs []string
		for i, j := range jobs {
			if i < len(errs) && errs[i] != nil {
				failed = append(failed, j.ID)
				msgs = append(msgs, storableText(errs[i].Error(), l.maxErrorBytes))
				continue
			}
			done = append(done, j.ID)
			published = append(published, Dispatched{Origin: j.Origin, Lateness: late[i]})
		}
		if len(done) > 0 {
			if _, err := tx.Exec(ctx, l.q.dispatched, done); err != nil {
				return err
			}
		}
		if len(failed) > 0 {
			if _, err := tx.Exec(ctx, l.q.dispatchFailed, failed, msgs); err != nil {
				return err
			}
		}
		return nil
	})
	if isUndefinedTable(err) {
		return 0, nil, ErrNotScheduled
	}
	if err != nil {
		return 0, nil, fmt.Errorf("dispatch due jobs: %w", err)
	}
	return taken, published, nil
}

// Dispatched is one job DispatchDue published: its origin, and how late it was on the
// database's clock (from its run_at to when it was taken).
type Dispatched struct {
	Origin   string
	Lateness time.Duration
}

// Until is how long until something is due, on the database's clock: zero or negative when
// it is due now. OK is false when nothing waits.
type Until struct {
	D  time.Duration
	OK bool
}

// Due reports whether something waits and is due now.
func (u Until) Due() bool { return u.OK && u.D <= 0 }

// UntilDue returns how long until the next scheduled job is due, and until the next tick of an
// unpaused periodic job. It is the dispatcher's one cheap query while idle (two index
// lookups).
func (l *Ledger) UntilDue(ctx context.Context) (job, periodic Until, err error) {
	var j, p *float64
	err = l.pool.QueryRow(ctx, l.q.untilDue).Scan(&j, &p)
	if isUndefinedTable(err) {
		return job, periodic, ErrNotScheduled
	}
	if err != nil {
		return job, periodic, err
	}
	until := func(s *float64) Until {
		if s == nil {
			return Until{}
		}
		return Until{D: time.Duration(*s * float64(time.Second)), OK: true}
	}
	return until(j), until(p), nil
}

// ScheduledStatus returns the scheduled row of job id, or ErrNotFound.
func (l *Ledger) ScheduledStatus(ctx context.Context, id string) (*ScheduledJob, error) {
	j, err := scanScheduled(l.pool.QueryRow(ctx, l.q.scheduledByID, id))
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("scheduled job %q: %w", id, err)
	}
	return &j, nil
}

// scheduledColumns are the columns scanScheduled reads, in its order.
const scheduledColumns = `id, kind, key, payload, max_attempts, run_at, origin, periodic, created_at, dispatch_errors, last_error`

// scanScheduled reads one row of scheduledColumns.
func scanScheduled(row pgx.Row) (ScheduledJob, error) {
	var j ScheduledJob
	var periodic, lastErr *string
	err := row.Scan(&j.ID, &j.Kind, &j.Key, &j.Payload, &j.MaxAttempts, &j.RunAt, &j.Origin, &periodic,
		&j.CreatedAt, &j.DispatchErrors, &lastErr)
	j.Periodic, j.LastError = deref(periodic), deref(lastErr)
	return j, err
}

// RunScheduledNow makes job id's scheduled row due now and wakes the dispatchers; it returns
// ErrNotFound when no row waits.
func (l *Ledger) RunScheduledNow(ctx context.Context, id string) (*ScheduledJob, error) {
	var j ScheduledJob
	err := l.pool.QueryRow(ctx, l.q.runScheduledNow, id, l.outbox.channel).Scan(&j.ID, &j.Kind, &j.Key, &j.RunAt, &j.Origin)
	if errors.Is(err, pgx.ErrNoRows) || isUndefinedTable(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("run scheduled job %q now: %w", id, err)
	}
	return &j, nil
}

// CountScheduled returns the number of scheduled jobs per kind.
func (l *Ledger) CountScheduled(ctx context.Context) (map[string]int64, error) {
	rows, err := l.pool.Query(ctx, l.q.countScheduled)
	if isUndefinedTable(err) {
		return map[string]int64{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("count scheduled jobs: %w", err)
	}
	counts := map[string]int64{}
	var kind string
	var n int64
	_, err = pgx.ForEachRow(rows, []any{&kind, &n}, func() error { counts[kind] = n; return nil })
	if isUndefinedTable(err) {
		return map[string]int64{}, nil
	}
	return counts, err
}

// Pool returns the ledger's pool.
func (l *Ledger) Pool() *pgxpool.Pool { return l.pool }
