package idempotency

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// State is a key's state in the ledger: one of the job states of package leveetype.
type State = leveetype.State

// The ledger's states.
const (
	StateRunning   = leveetype.StateRunning
	StateRetrying  = leveetype.StateRetrying
	StateSucceeded = leveetype.StateSucceeded
	StateDead      = leveetype.StateDead
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
