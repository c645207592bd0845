package idempotency

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/levee-dev/levee/internal/queue"
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
	return l, nil
}

// Schema returns the schema the ledger lives in.
func (l *Ledger) Schema() string { return l.schema }

// ClaimRequest asks to own one job's key for a lease.
type ClaimRequest struct {
	JobID       string
	Kind        string
	Key         string
	PayloadHash []byte
	EnqueuedAt  time.Time
	// FallbackOf is the job this one replaces, for a job published by a fallback.
	FallbackOf string
	// Lease is how long the claim holds without a heartbeat, on the database clock.
	Lease time.Duration
}

// ClaimStatus says what a claim found.
type ClaimStatus int

const (
	// Claimed: the caller owns the key until the lease ends; run the job.
	Claimed ClaimStatus = iota + 1
	// Busy: another owner holds a live lease, or the key's next attempt is not due yet. Wait
	// ClaimResult.Wait and try again (NakWithDelay).
	Busy
	// AlreadySucceeded: the key's effect is done (by ClaimResult.Owner). Ack without running.
	AlreadySucceeded
	// AlreadyDead: the key is dead (ClaimResult.Reason). Do not run.
	AlreadyDead
	// PayloadMismatch: the key was used before with a different payload. Permanent.
	PayloadMismatch
	// Invalid: the request cannot be stored; dead-letter the message as malformed without
	// touching the ledger's keys (design rule 28). ClaimResult.Reason says why: its kind, key
	// or job id (or the job it falls back from) is not valid UTF-8 without NUL within
	// queue.MaxKeyLen or queue.MaxIDLen bytes, or it has no payload hash. AddRecords can record
	// the job: it stores it under a stand-in id that Status finds again.
	Invalid
)

func (s ClaimStatus) String() string {
	switch s {
	case Claimed:
		return "claimed"
	case Busy:
		return "busy"
	case AlreadySucceeded:
		return "already_succeeded"
	case AlreadyDead:
		return "already_dead"
	case PayloadMismatch:
		return "payload_mismatch"
	case Invalid:
		return "invalid"
	}
	return fmt.Sprintf("ClaimStatus(%d)", int(s))
}

// ClaimResult is the answer to one ClaimRequest, in the same position.
type ClaimResult struct {
	Status ClaimStatus
	// Fence identifies this ownership; pass it to every later write. Set when Claimed.
	Fence int64
	// Attempts counts attempts on the key including this one. Set when Claimed.
	Attempts int
	// Owner is the job id that owns (or finished) the key. Set unless Claimed.
	Owner string
	// Reason is the dead reason when AlreadyDead, and why the request cannot be stored when
	// Invalid.
	Reason string
	// Wait is how long to wait before trying again when Busy.
	Wait time.Duration
}

// busyRaceWait is the retry delay when a key appeared between our snapshot and our insert.
const busyRaceWait = time.Second

// Claim claims the keys of reqs in one statement and returns one result per request, in order.
// A key that appears more than once in reqs is claimed for its first request only; the others
// are Busy. A request the ledger cannot store is Invalid, and is not sent: it never fails the
// others (design rule 28). A statement that meets a deadlock or a serialization failure is
// tried again (design rule 31).
func (l *Ledger) Claim(ctx context.Context, reqs []ClaimRequest) ([]ClaimResult, error) {
	results := make([]ClaimResult, len(reqs))
	if len(reqs) == 0 {
		return results, nil
	}
	type kk struct{ kind, key string }
	first := make(map[kk]int, len(reqs))
	var (
		idx      []int
		jobIDs   = make([]string, 0, len(reqs))
		kinds    = make([]string, 0, len(reqs))
		keys     = make([]string, 0, len(reqs))
		hashes   = make([][]byte, 0, len(reqs))
		enqueued = make([]time.Time, 0, len(reqs))
		leases   = make([]float64, 0, len(reqs))
		fallOf   = make([]*string, 0, len(reqs))
	)
	// Requests are sorted by (kind, key) in byte order, so that the first request of a key is
	// found and the statement's rows are numbered in the order its insert takes them: the
	// order every statement locks keys in (design rule 31).
	order := make([]int, len(reqs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(strings.Compare(reqs[a].Kind, reqs[b].Kind), strings.Compare(reqs[a].Key, reqs[b].Key))
	})
	for _, i := range order {
		r := reqs[i]
		if why := invalidClaim(r); why != "" {
			results[i] = ClaimResult{Status: Invalid, Reason: why}
			continue
		}
		k := kk{r.Kind, r.Key}
		if _, dup := first[k]; dup {
			results[i] = ClaimResult{Status: Busy, Wait: busyRaceWait}
			continue
		}
		first[k] = i
		idx = append(idx, i)
		jobIDs = append(jobIDs, r.JobID)
		kinds = append(kinds, r.Kind)
		keys = append(keys, r.Key)
		hashes = append(hashes, r.PayloadHash)
		enq := r.EnqueuedAt
		if enq.IsZero() {
			enq = time.Now()
		}
		enqueued = append(enqueued, enq)
		leases = append(leases, r.Lease.Seconds())
		if r.FallbackOf != "" {
			fallOf = append(fallOf, &r.FallbackOf)
		} else {
			fallOf = append(fallOf, nil)
		}
	}

	if len(idx) == 0 {
		return results, nil
	}
	err := l.retryLocks(ctx, func() error {
		rows, err := l.pool.Query(ctx, l.q.claim, jobIDs, kinds, keys, hashes, enqueued, leases, fallOf)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				ord                int
				fence              *int64
				attempts           *int
				state, owner, why  *string
				sameHash           *bool
				leaseLeft, dueLeft *float64
			)
			if err := rows.Scan(&ord, &fence, &attempts, &state, &owner, &sameHash, &leaseLeft, &dueLeft, &why); err != nil {
				return fmt.Errorf("scan: %w", err)
			}
			i := idx[ord-1]
			results[i] = interpretClaim(fence, attempts, state, owner, sameHash, leaseLeft, dueLeft, why)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim %d keys: %w", len(jobIDs), err)
	}
	return results, nil
}

func interpretClaim(fence *int64, attempts *int, state, owner *string, sameHash *bool, leaseLeft, dueLeft *float64, why *string) ClaimResult {
	if fence != nil {
		return ClaimResult{Status: Claimed, Fence: *fence, Attempts: *attempts}
	}
	if state == nil {
		// The row was inserted by another transaction after our snapshot: it is being worked.
		return ClaimResult{Status: Busy, Wait: busyRaceWait}
	}
	res := ClaimResult{Owner: deref(owner)}
	switch {
	case sameHash != nil && !*sameHash:
		res.Status = PayloadMismatch
	case *state == "succeeded":
		res.Status = AlreadySucceeded
	case *state == "dead":
		res.Status = AlreadyDead
		res.Reason = deref(why)
	case *state == "running" && leaseLeft != nil:
		res.Status = Busy
		res.Wait = secondsAtLeast(*leaseLeft, 100*time.Millisecond)
	case *state == "retrying" && dueLeft != nil:
		res.Status = Busy
		res.Wait = secondsAtLeast(*dueLeft, 100*time.Millisecond)
	default:
		res.Status = Busy
		res.Wait = busyRaceWait
	}
	return res
}

func secondsAtLeast(s float64, min time.Duration) time.Duration {
	d := time.Duration(s * float64(time.Second))
	return max(d, min)
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

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

// State is a key's state in the ledger.
type State string

// The states a key moves through.
const (
	StateRunning   State = "running"
	StateRetrying  State = "retrying"
	StateSucceeded State = "succeeded"
	StateDead      State = "dead"
)

// Outcome is the end of one attempt, to be committed with Finish.
type Outcome struct {
	Lease
	// State is StateSucceeded, StateRetrying or StateDead.
	State State
	// Result is the handler's result as JSON, for StateSucceeded. Nil stores SQL NULL.
	Result []byte
	// Reason is the short dead-letter code, for StateDead.
	Reason string
	// Error is the attempt's error text; empty keeps the previous one.
	Error string
	// RetryIn is the delay before the next attempt, for StateRetrying.
	RetryIn time.Duration
	// Release gives the attempt back (shutdown): the key becomes retrying at once and the
	// attempt is not counted.
	Release bool
	// FallbackTo names the job that replaces this one (StateDead with reason fell_back).
	FallbackTo string
	// Attempt, when not empty, records the attempt this outcome ends in the attempts table,
	// in the same statement: how it ended (AttemptSucceeded, AttemptFailed, ...). Empty for
	// an outcome that ran no attempt (a job handed to its fallback kind unrun).
	Attempt string
	// Worker names the worker that ran the attempt, for the attempts table.
	Worker string
}

// How an attempt ended, as the attempts table stores it.
const (
	AttemptSucceeded = "succeeded"
	AttemptFailed    = "failed"
	AttemptTimedOut  = "timed_out"
	// AttemptReleased: given back unfinished at shutdown; not counted.
	AttemptReleased = "released"
)

// Finish commits outcomes in one statement (one transaction) and reports which were applied.
// applied[i] is true when the outcome is now the key's: written by this call, or found
// already written under the same fence (the key holds exactly this outcome's state under
// this fence), which means an earlier call with this outcome landed and only its answer was
// lost, so a commit retried after a lost connection is recognised as applied (design rule
// 30). applied[i] is false where the lease was lost (another claim moved the fence on, or the
// key holds another outcome): the caller must not ack that message, since the new owner will
// finish it. A statement that meets a deadlock or a serialization failure is tried again
// (design rule 31).
func (l *Ledger) Finish(ctx context.Context, outcomes []Outcome) (applied []bool, err error) {
	return l.finish(ctx, l.pool, outcomes, true)
}

// FinishTx is Finish inside tx, so that a handler's own writes in tx commit together with the
// job's success (design rule 13), or not at all: when applied[i] is false the caller must roll
// tx back.
func (l *Ledger) FinishTx(ctx context.Context, tx pgx.Tx, outcomes []Outcome) (applied []bool, err error) {
	return l.finish(ctx, tx, outcomes, false)
}

// Begin starts a transaction on the ledger's pool, for handlers that write in the same
// transaction as their job's outcome (FinishTx). It runs at READ COMMITTED whatever the
// database's default isolation (design rule 13): the attempt's heartbeats extend the key's
// lease meanwhile, and under REPEATABLE READ or SERIALIZABLE the transaction's FinishTx would
// then fail with a serialization failure on every attempt.
func (l *Ledger) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := l.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	return tx, nil
}

// querier is what finish needs of a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// finish commits outcomes through db. A statement that meets a deadlock or a serialization
// failure is tried again when retry is set (its own transaction); inside a caller's
// transaction it cannot be, since the failure aborted the transaction.
func (l *Ledger) finish(ctx context.Context, db querier, outcomes []Outcome, retry bool) (applied []bool, err error) {
	applied = make([]bool, len(outcomes))
	if len(outcomes) == 0 {
		return applied, nil
	}
	n := len(outcomes)
	var (
		kinds    = make([]string, n)
		keys     = make([]string, n)
		fences   = make([]int64, n)
		states   = make([]string, n)
		results  = make([]*string, n)
		reasons  = make([]*string, n)
		errs     = make([]*string, n)
		retryIn  = make([]float64, n)
		releases = make([]bool, n)
		fallTo   = make([]*string, n)
		attempt  = make([]*string, n)
		workers  = make([]*string, n)
	)
	// Every text is made storable here (design rule 28), so that no outcome can fail the
	// others of its group commit. An outcome whose lease names a key that cannot be stored
	// matches no row: it is not applied, and not sent.
	var idx []int // the outcomes sent, when some are not
	txt := newTexts(6 * n)
	for i, o := range outcomes {
		switch o.State {
		case StateSucceeded, StateRetrying, StateDead:
		default:
			return nil, fmt.Errorf("finish %s/%s: invalid outcome state %q", StorableText(o.Kind), StorableText(o.Key), o.State)
		}
		if !storableLease(o.Lease) {
			if idx == nil {
				idx = make([]int, 0, n)
				for j := range i {
					idx = append(idx, j)
				}
			}
			continue
		}
		if idx != nil {
			idx = append(idx, i)
		}
		kinds[i], keys[i], fences[i], states[i] = o.Kind, o.Key, o.Fence, string(o.State)
		if o.Result != nil {
			results[i] = txt.add(storableResult(o.Result))
		}
		reasons[i] = txt.text(o.Reason)
		if o.Error != "" {
			errs[i] = txt.add(storableText(o.Error, l.maxErrorBytes))
		}
		retryIn[i] = o.RetryIn.Seconds()
		releases[i] = o.Release
		fallTo[i] = txt.text(o.FallbackTo)
		attempt[i] = txt.text(o.Attempt)
		workers[i] = txt.text(o.Worker)
	}
	if idx != nil {
		if len(idx) == 0 {
			return applied, nil
		}
		kinds, keys, fences, states = pick(kinds, idx), pick(keys, idx), pick(fences, idx), pick(states, idx)
		results, reasons, errs, retryIn = pick(results, idx), pick(reasons, idx), pick(errs, idx), pick(retryIn, idx)
		releases, fallTo, attempt, workers = pick(releases, idx), pick(fallTo, idx), pick(attempt, idx), pick(workers, idx)
	}
	var sent []bool
	run := func() error {
		sent = make([]bool, len(kinds))
		rows, err := db.Query(ctx, l.q.finish, kinds, keys, fences, states, results, reasons, errs, retryIn, releases, fallTo, attempt, workers)
		if err != nil {
			return err
		}
		return collectOrdinals(rows, sent)
	}
	if retry {
		err = l.retryLocks(ctx, run)
	} else {
		err = run()
	}
	if err != nil {
		return nil, fmt.Errorf("finish %d outcomes: %w", n, err)
	}
	if idx == nil {
		return sent, nil
	}
	for j, i := range idx {
		applied[i] = sent[j]
	}
	return applied, nil
}

// lockRetries is how many times Claim, Heartbeat and Finish try a statement again after it
// met a deadlock or a serialization failure (design rule 31: neither is ever an outcome).
// Statements lock keys in one order, so a deadlock needs a statement from elsewhere (an
// operator's transaction, a handler's); a serialization failure needs a database whose
// default isolation is above READ COMMITTED.
const lockRetries = 3

// retryLocks runs op, and runs it again up to l.lockRetries times while it fails with a
// deadlock or a serialization failure, after a short jittered pause (5 to 15 ms, times the
// try) so that the statements that collided do not meet again in step. The failed statement
// was rolled back whole: trying it again is safe.
func (l *Ledger) retryLocks(ctx context.Context, op func() error) error {
	for try := 1; ; try++ {
		err := op()
		if err == nil || try > l.lockRetries || !lockConflict(err) {
			return err
		}
		pause := time.NewTimer(time.Duration(try) * (5*time.Millisecond + rand.N(10*time.Millisecond)))
		select {
		case <-ctx.Done():
			pause.Stop()
			return err
		case <-pause.C:
		}
	}
}

// lockConflict reports a deadlock (40P01) or a serialization failure (40001).
func lockConflict(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "40P01" || pgErr.Code == "40001")
}

// storableLease reports whether le names a key that can exist: one whose kind and key are
// storable text within the bounds Claim enforces. Any other lease matches no row.
func storableLease(le Lease) bool {
	return storableName(le.Kind, queue.MaxKeyLen) && storableName(le.Key, queue.MaxKeyLen)
}

// pick returns the elements of s at idx, in order.
func pick[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for j, i := range idx {
		out[j] = s[i]
	}
	return out
}

// Record is a job that finished without owning its key: a duplicate of a key another job
// finished, a job whose key was reused with a different payload, or a malformed message.
type Record struct {
	JobID       string
	Kind        string
	Key         string
	State       State // StateSucceeded or StateDead
	Reason      string
	Error       string
	DuplicateOf string
	EnqueuedAt  time.Time
}

// AddRecords stores records in one statement. A record for a job id already recorded is kept
// as it was (the first word stands), so redeliveries are harmless. No record can fail the
// others (design rule 28): a record whose job id or key cannot be stored as it is (not valid
// UTF-8, a NUL, over queue.MaxIDLen or queue.MaxKeyLen bytes) is stored under the id
// queue.BoundedID(id) (its stand-in, which Status finds again from the id) and with its key
// and kind made storable and cut to queue.MaxKeyLen bytes; every other text is made storable
// (StorableText).
func (l *Ledger) AddRecords(ctx context.Context, recs []Record) error {
	return addRecords(ctx, l.pool, l, recs)
}

// storableRecord returns r as the ledger stores it (see AddRecords).
func storableRecord(r Record) Record {
	r.JobID = storableID(r.JobID)
	if !storableName(r.Key, queue.MaxKeyLen) {
		r.Key = storableKey(r.Key)
	}
	r.Kind = storableKind(r.Kind)
	return r
}

// execer is what addRecords needs of a pool or a transaction.
type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

func addRecords(ctx context.Context, db execer, l *Ledger, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	n := len(recs)
	var (
		ids      = make([]string, n)
		kinds    = make([]string, n)
		keys     = make([]string, n)
		states   = make([]string, n)
		reasons  = make([]*string, n)
		errs     = make([]*string, n)
		dupOf    = make([]*string, n)
		enqueued = make([]*time.Time, n)
	)
	txt := newTexts(3 * n)
	for i, r := range recs {
		if r.State != StateSucceeded && r.State != StateDead {
			return fmt.Errorf("record job %s: invalid state %q", StorableText(r.JobID), StorableText(string(r.State)))
		}
		r = storableRecord(r)
		ids[i], kinds[i], keys[i], states[i] = r.JobID, r.Kind, r.Key, string(r.State)
		reasons[i] = txt.text(r.Reason)
		if r.Error != "" {
			errs[i] = txt.add(storableText(r.Error, l.maxErrorBytes))
		}
		dupOf[i] = txt.text(r.DuplicateOf)
		if !r.EnqueuedAt.IsZero() {
			enqueued[i] = &r.EnqueuedAt
		}
	}
	if _, err := db.Exec(ctx, l.q.addRecords, ids, kinds, keys, states, reasons, errs, dupOf, enqueued); err != nil {
		return fmt.Errorf("record %d jobs: %w", n, err)
	}
	return nil
}

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
