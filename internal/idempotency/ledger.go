package idempotency

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures a Ledger.
type Config struct {
	// Pool is the Postgres pool. Required.
	Pool *pgxpool.Pool

	// Schema is the Postgres schema holding the ledger tables (the namespace). Default "levee".
	Schema string

	// MaxErrorBytes bounds the error text stored per key; longer texts are truncated on a UTF-8
	// boundary. Default 2048.
	MaxErrorBytes int
}

// Ledger is the idempotency ledger. It is safe for concurrent use; most callers want Claim and
// Finish.
type Ledger struct {
	pool          *pgxpool.Pool
	schema        string
	maxErrorBytes int
	lockRetries   int
	q             queries
	outbox        *Outbox
}

// New returns a Ledger for cfg. It does not touch the database; call Migrate first.
func New(cfg Config) (*Ledger, error) {
	if cfg.Pool == nil {
		return nil, errors.New("idempotency: Config.Pool is required")
	}
	schema := cmp.Or(cfg.Schema, "levee")
	l := &Ledger{
		pool:          cfg.Pool,
		schema:        schema,
		maxErrorBytes: cmp.Or(cfg.MaxErrorBytes, 2048),
		lockRetries:   lockRetries,
	}
	if l.maxErrorBytes < 0 {
		return nil, fmt.Errorf("idempotency: Config.MaxErrorBytes must be positive, got %d", cfg.MaxErrorBytes)
	}
	l.q = newQueries(pgx.Identifier{schema}.Sanitize())
	l.outbox = NewOutbox(schema)
	return l, nil
}

// Schema returns the schema the ledger lives in.
func (l *Ledger) Schema() string { return l.schema }

// Lease names one claimed key and the fence of its claim.
type Lease struct {
	Kind  string
	Key   string
	Fence int64
}

// Heartbeat extends the leases by d on the database clock, in one statement. alive[i] is false
// where the lease was lost (the fence moved on or the key is no longer running): cancel that
// attempt and write nothing more for it. A statement that meets a deadlock or a serialization
// failure is tried again (design rule 31).
func (l *Ledger) Heartbeat(ctx context.Context, leases []Lease, d time.Duration) (status []LeaseStatus, err error) {
	status = make([]LeaseStatus, len(leases))
	for i := range status {
		status[i] = LeaseLost
	}
	if len(leases) == 0 {
		return status, nil
	}
	// Sorted like claims (see Claim); the statement locks its rows in that order too (design
	// rule 31). A lease that names a key that cannot be stored matches no row: it is lost, and
	// not sent (design rule 28).
	sorted := slices.DeleteFunc(slices.Clone(leases), func(le Lease) bool { return !storableLease(le) })
	if len(sorted) == 0 {
		return status, nil
	}
	slices.SortFunc(sorted, func(a, b Lease) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Key, b.Key))
	})
	kinds, keys, fences := splitLeases(sorted)
	var sortedStatus []LeaseStatus
	err = l.retryLocks(ctx, func() error {
		sortedStatus = make([]LeaseStatus, len(sorted))
		for i := range sortedStatus {
			sortedStatus[i] = LeaseBusy // skipped: its row is held by another statement
		}
		rows, err := l.pool.Query(ctx, l.q.heartbeat, kinds, keys, fences, d.Seconds())
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var ord, what int
			if err := rows.Scan(&ord, &what); err != nil {
				return err
			}
			if ord >= 1 && ord <= len(sortedStatus) {
				sortedStatus[ord-1] = LeaseStatus(what)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("heartbeat %d leases: %w", len(leases), err)
	}
	byLease := make(map[Lease]LeaseStatus, len(sorted))
	for i, le := range sorted {
		if cur, ok := byLease[le]; !ok || sortedStatus[i] < cur {
			byLease[le] = sortedStatus[i] // a lease listed twice: the best answer
		}
	}
	for i, le := range leases {
		if st, ok := byLease[le]; ok {
			status[i] = st
		}
	}
	return status, nil
}

// LeaseStatus is what Heartbeat found of one lease.
type LeaseStatus int

const (
	// LeaseExtended: the lease was extended.
	LeaseExtended LeaseStatus = 1
	// LeaseLost: the key's fence moved on, or it is no longer running (or cannot be stored).
	LeaseLost LeaseStatus = 2
	// LeaseBusy: the key's row was held by another statement (a handler's own transaction
	// committing its outcome, say) and was skipped rather than waited for: nothing is known;
	// the lease stands until it is extended or its deadline passes.
	LeaseBusy LeaseStatus = 3
)

// Reap deletes finished keys, records and attempts older than retention, up to limit rows per table, and
// returns how many it deleted. Running and retrying keys are never reaped.
func (l *Ledger) Reap(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	var total int64
	for _, q := range []string{l.q.reapKeys, l.q.reapRecords, l.q.reapAttempts, l.q.reapLastChances} {
		tag, err := l.pool.Exec(ctx, q, retention.Seconds(), limit)
		if err != nil {
			return total, fmt.Errorf("reap: %w", err)
		}
		total += tag.RowsAffected()
	}
	return total, nil
}

// DropIdle closes the pool's idle connections at once, without a word to the server. After a
// statement timed out, the other idle connections may be as dead (a silent network partition, a
// failover: no reset ever arrives), and each would cost its caller a full timeout; new ones are
// dialled instead (design rule 29).
func (l *Ledger) DropIdle(ctx context.Context) {
	for _, c := range l.pool.AcquireAllIdle(ctx) {
		_ = c.Hijack().PgConn().Conn().Close()
	}
}

// Warm opens up to conns of the pool's connections (no more than are free: a pool shared with
// the application keeps what it holds) and runs the claim, finish and heartbeat statements
// once on each with no rows, so that the first jobs a worker takes wait for no connection to
// be dialled and no statement to be prepared (a worker started cold added up to 300 ms to its
// first few hundred jobs). A connection that is not free within warmAcquire is not waited
// for; only a statement that fails is an error.
func (l *Ledger) Warm(ctx context.Context, conns int) error {
	st := l.pool.Stat()
	conns = min(conns, int(st.MaxConns()-st.AcquiredConns()))
	if conns <= 0 {
		return nil
	}
	// Each connection is held until all are open, so that each is another.
	held := make([]*pgxpool.Conn, conns)
	defer func() {
		for _, c := range held {
			if c != nil {
				c.Release()
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make([]error, conns)
	for i := range conns {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, warmAcquire)
			c, err := l.pool.Acquire(actx)
			cancel()
			if err != nil {
				return // busy: the pool is in use already, nothing to warm
			}
			held[i] = c
			for _, q := range []struct {
				sql  string
				args int
			}{{l.q.claim, 7}, {l.q.finish, 12}, {l.q.heartbeat, 4}} {
				if _, err := c.Exec(ctx, q.sql, make([]any, q.args)...); err != nil {
					errs[i] = err
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("warm the ledger's connections: %w", err)
	}
	return nil
}

// warmAcquire bounds Warm's wait for one connection.
const warmAcquire = 500 * time.Millisecond

// Ping checks that the ledger's tables answer.
func (l *Ledger) Ping(ctx context.Context) error {
	var one int64
	if err := l.pool.QueryRow(ctx, l.q.ping).Scan(&one); err != nil {
		return fmt.Errorf("ledger ping: %w", err)
	}
	return nil
}

func splitLeases(leases []Lease) (kinds, keys []string, fences []int64) {
	kinds = make([]string, len(leases))
	keys = make([]string, len(leases))
	fences = make([]int64, len(leases))
	for i, le := range leases {
		kinds[i], keys[i], fences[i] = le.Kind, le.Key, le.Fence
	}
	return kinds, keys, fences
}

// collectOrdinals reads rows of 1-based ordinals and marks them in hit.
func collectOrdinals(rows pgx.Rows, hit []bool) error {
	defer rows.Close()
	for rows.Next() {
		var ord int
		if err := rows.Scan(&ord); err != nil {
			return err
		}
		if ord >= 1 && ord <= len(hit) {
			hit[ord-1] = true
		}
	}
	return rows.Err()
}

// Truncate shortens s to at most n bytes on a UTF-8 boundary, marking the cut with "…".
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := max(n-len(mark), 0)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// KeepPlansFresh runs ANALYZE on the keys table while it is young and has grown a lot since
// Postgres last counted it, and reports whether it did. Sessions keep a prepared statement's
// generic plan until the table's statistics change: a plan made while the ledger was small
// seq-scans keys in a nested loop, and kept as the table grows it made a one-key finish take
// 90 ms, a heartbeat 50 ms, at 100,000 keys (autovacuum's ANALYZE comes a minute or more
// later). New statistics make every session plan again, by index once the table is large.
// Workers call it every few seconds until it reports the table mature (counted at matureKeys
// rows or more: its plans stay good as it grows); it is a catalog read when there is nothing
// to do.
func (l *Ledger) KeepPlansFresh(ctx context.Context) (analyzed, mature bool, err error) {
	var counted, live float64
	var owner bool
	if err := l.pool.QueryRow(ctx, l.q.keysGrowth).Scan(&counted, &live, &owner); err != nil {
		return false, false, fmt.Errorf("read the ledger's table statistics: %w", err)
	}
	switch {
	case counted >= matureKeys:
		return false, true, nil
	case !owner:
		// Postgres would skip the ANALYZE with a warning in its log, every time.
		return false, false, errors.New("only the owner of the ledger's keys table may analyze it, and this role is not")
	case live < max(2*counted, minGrowth):
		return false, false, nil
	}
	if _, err := l.pool.Exec(ctx, l.q.analyzeKeys); err != nil {
		return false, false, fmt.Errorf("analyze the ledger's keys table: %w", err)
	}
	return true, false, nil
}

// A keys table counted at matureKeys rows or more has index plans that stay good as it grows;
// below, it is analyzed each time it has doubled, once it holds minGrowth rows.
const (
	matureKeys = 200_000
	minGrowth  = 1_000
)
