package admin

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// ErrNotFound is returned for a job id (or key) that Levee does not know. It is
// levee.ErrJobNotFound, so errors.Is matches either.
var ErrNotFound = core.ErrJobNotFound

// ErrConflict is returned (wrapping a message that says why) for an action that does not apply
// to the job's current state, such as cancelling a running or finished job.
var ErrConflict = errors.New("the action does not apply to the job's current state")

// ReasonCancelled is the dead reason of a job an operator cancelled.
const ReasonCancelled = idempotency.ReasonCancelled

// JobFind finds the job with id idOrKey or else the jobs whose idempotency key it is (across
// kinds, newest first). It returns an error wrapping ErrNotFound when there are none.
func (c *Client) JobFind(ctx context.Context, idOrKey string) ([]leveetype.JobStatus, error) {
	if queue.ValidateID(idOrKey) == nil {
		st, err := c.JobGet(ctx, idOrKey)
		if err == nil {
			return []leveetype.JobStatus{*st}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if err := queue.ValidateKey(idOrKey); err != nil {
		return nil, fmt.Errorf("%w: %q is neither a job id nor an idempotency key", ErrNotFound, idOrKey)
	}
	sts, err := c.conn.Ledger.FindByKey(ctx, idOrKey)
	if err != nil {
		return nil, err
	}
	if len(sts) == 0 {
		return nil, fmt.Errorf("%w: no job has the id or idempotency key %q", ErrNotFound, idOrKey)
	}
	out := make([]leveetype.JobStatus, len(sts))
	for i := range sts {
		out[i] = *core.PublicStatus(&sts[i])
	}
	return out, nil
}

// JobListParams selects jobs for JobList. Zero fields select all.
type JobListParams struct {
	// State is one of scheduled, running, retrying, succeeded, dead; "" for any. Queued jobs
	// wait in NATS, not in the ledger, so StateQueued is refused (Stats counts them per kind).
	// StateScheduled lists the jobs waiting in the ledger for their time, soonest due first.
	State leveetype.State
	Kind  string
	// Since and Until bound the job's enqueued time (Since <= t < Until); zero is open. A job
	// whose enqueued time is unknown (a malformed message) counts by when it was recorded; a
	// scheduled job by when it was published.
	Since, Until time.Time
	// Cursor continues a listing: Next of the previous page. "" is the first page.
	Cursor string
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// JobPage is one page of JobList.
type JobPage struct {
	Jobs []leveetype.JobStatus
	// Next is the cursor of the next page, "" when there is no more.
	Next string
}

// ErrBadFilter is returned (wrapped) by Jobs for a filter it cannot apply.
var ErrBadFilter = errors.New("invalid job filter")

// Default and largest page sizes of JobList.
const (
	DefaultJobsLimit = 50
	MaxJobsLimit     = 500
)

// JobList lists the ledger's jobs newest first (by enqueued time, then id) with keyset paging:
// each page is one index range scan per ledger table, never OFFSET and never a count, so a
// page costs the same on a ledger of any size. Rows inserted while paging appear at most once,
// and rows that existed when paging began appear exactly once (unless they changed owner).
//
// Without a State filter the listing holds the scheduled jobs too (state scheduled, with
// RunAt), placed by when they were published; one that becomes due while paging moves to
// when it is published to the stream. With State StateScheduled it lists only them, soonest
// due first (by RunAt, then id), and the cursor continues in that order.
func (c *Client) JobList(ctx context.Context, f JobListParams) (JobPage, error) {
	if c.conn.Ledger == nil {
		return JobPage{}, ErrDatabaseRequired
	}
	q := idempotency.JobQuery{Kind: f.Kind, Since: f.Since, Until: f.Until}
	switch f.State {
	case "":
	case leveetype.StateScheduled, leveetype.StateRunning, leveetype.StateRetrying, leveetype.StateSucceeded, leveetype.StateDead:
		q.State = f.State
	case leveetype.StateQueued:
		return JobPage{}, fmt.Errorf("%w: state queued: queued jobs wait in NATS, not in the ledger; see Stats for their count per kind, or Status by id", ErrBadFilter)
	default:
		return JobPage{}, fmt.Errorf("%w: unknown state %q (use scheduled, running, retrying, succeeded or dead)", ErrBadFilter, f.State)
	}
	if f.Kind != "" {
		if err := queue.ValidateKind(f.Kind); err != nil {
			return JobPage{}, fmt.Errorf("%w: %w", ErrBadFilter, err)
		}
	}
	switch {
	case f.Limit == 0:
		q.Limit = DefaultJobsLimit
	case f.Limit < 0 || f.Limit > MaxJobsLimit:
		return JobPage{}, fmt.Errorf("%w: limit %d: use 1 to %d", ErrBadFilter, f.Limit, MaxJobsLimit)
	default:
		q.Limit = f.Limit
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return JobPage{}, err
		}
		q.AfterAt, q.AfterID = at, id
	}
	q.Limit++ // one more tells whether there is a next page
	sts, err := c.conn.Ledger.ListJobs(ctx, q)
	if err != nil {
		return JobPage{}, err
	}
	page := JobPage{Jobs: make([]leveetype.JobStatus, 0, len(sts))}
	more := len(sts) == q.Limit
	if more {
		sts = sts[:q.Limit-1]
	}
	for i := range sts {
		page.Jobs = append(page.Jobs, *core.PublicStatus(&sts[i]))
	}
	if more && len(sts) > 0 {
		last := sts[len(sts)-1]
		page.Next = encodeCursor(last.SortAt, last.ID)
	}
	return page, nil
}

// A cursor is the position of a page's last row: its sort time and job id.
func encodeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "|" + id))
}

func decodeCursor(s string) (time.Time, string, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		ts, id, ok := strings.Cut(string(b), "|")
		us, perr := strconv.ParseInt(ts, 10, 64)
		if ok && perr == nil && id != "" {
			return time.UnixMicro(us), id, nil
		}
	}
	return time.Time{}, "", fmt.Errorf("%w: cursor %q is not one JobList returned", ErrBadFilter, s)
}

// JobAttempts returns job id's attempt timeline, oldest first, with a last "running" entry while
// an attempt is in progress. Attempts are written by the worker in the same statement (and
// group commit) as their outcome. A known job with no attempt yet (queued, or a duplicate that
// never ran) has an empty timeline; an unknown id returns an error wrapping ErrNotFound.
func (c *Client) JobAttempts(ctx context.Context, id string) ([]leveetype.Attempt, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if err := queue.ValidateID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	rows, err := c.conn.Ledger.Attempts(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		if _, err := c.JobGet(ctx, id); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

// JobRetry runs a job again: a dead job's DLQ entry is replayed exactly as `enqueue dlq
// replay` does (DeadJobReplay); a retrying job is made due now and a copy of its message is published
// so a worker takes it at once (the original message, delivered later, finds the key settled or
// busy and never runs the job twice); a scheduled job is made due now, and a worker's
// dispatcher publishes it within about a second (design rule 42). Any other state returns
// ErrConflict with the reason, as does a scheduled job that left the schedule meanwhile.
func (c *Client) JobRetry(ctx context.Context, id string, by leveetype.Actor) error {
	st, err := c.actionStatus(ctx, id)
	if err != nil {
		return err
	}
	switch st.State {
	case leveetype.StateScheduled:
		j, err := c.conn.Ledger.RunScheduledNow(ctx, id)
		if errors.Is(err, idempotency.ErrNotFound) {
			return fmt.Errorf("%w: job %s left the schedule meanwhile (published when due, or cancelled); look again", ErrConflict, id)
		}
		if err != nil {
			return err
		}
		return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "retry", Target: id,
			Detail: "scheduled job made due now; was due at " + rfc3339(st.RunAt) + " (" + j.Origin + ")"})
	case leveetype.StateDead:
		dj, err := c.DeadJobGet(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return fmt.Errorf("%w: job %s is dead but has no dead-letter entry (purged?); publish it again instead", ErrConflict, id)
		}
		if err != nil {
			return err
		}
		res, err := c.DeadJobReplay(ctx, *dj, DeadJobReplayParams{By: by})
		if errors.Is(err, ErrKeyDeadElsewhere) {
			return fmt.Errorf("%w: %w", ErrConflict, err)
		}
		if err != nil {
			return err
		}
		return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "retry", Target: id, Detail: "replayed from the dead-letter queue; key was " + cmp.Or(res.KeyState, "absent")})
	case leveetype.StateRetrying:
		if st.DuplicateOf != "" {
			return fmt.Errorf("%w: job %s is a duplicate of %s", ErrConflict, id, st.DuplicateOf)
		}
		qd, err := c.conn.Q.FindQueued(ctx, id)
		if err != nil {
			return fmt.Errorf("%w: job %s is retrying but its message is not in the work stream: %w", ErrConflict, id, err)
		}
		if err := c.conn.Ledger.MakeDue(ctx, st.Kind, st.Key, id); err != nil {
			return conflictIfNotApplicable(err, id)
		}
		env := qd.Envelope
		if err := c.conn.Q.Replay(ctx, env, fmt.Sprintf("retry:%s:%d", id, time.Now().UnixNano())); err != nil {
			return core.TranslatePublish(err)
		}
		return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "retry", Target: id, Detail: "retrying job made due now"})
	}
	return fmt.Errorf("%w: job %s is %s; only dead and retrying jobs can be retried", ErrConflict, id, st.State)
}

// JobCancel stops a scheduled, queued or retrying job from running again: it ends dead with
// reason "cancelled", and its copy goes to the dead-letter queue so it can be replayed. The
// ledger is written first: a worker that receives the job's message finds its key dead and
// terminates it without running it. A scheduled job's row is deleted in the same transaction,
// so it is never published (Ledger.CancelScheduledJob); one that a dispatcher publishes at
// that moment is cancelled in the stream instead. A running or finished job returns
// ErrConflict.
func (c *Client) JobCancel(ctx context.Context, id string, by leveetype.Actor) error {
	st, err := c.actionStatus(ctx, id)
	if err != nil {
		return err
	}
	msg := "cancelled by " + string(by)
	if st.State == leveetype.StateScheduled {
		err := c.cancelScheduled(ctx, id, by, msg)
		if !errors.Is(err, idempotency.ErrNotFound) {
			return err
		}
		// Published meanwhile: cancel it where it is now.
		if st, err = c.actionStatus(ctx, id); err != nil {
			return err
		}
	}
	var cancelled *idempotency.Cancelled
	qd, qerr := c.conn.Q.FindQueued(ctx, id)
	switch st.State {
	case leveetype.StateQueued:
		if qerr != nil {
			return fmt.Errorf("%w: job %s left the work stream meanwhile: %w", ErrConflict, id, qerr)
		}
		cancelled, err = c.conn.Ledger.CancelQueued(ctx, idempotency.ClaimRequest{
			JobID: id, Kind: qd.Kind, Key: qd.Key, PayloadHash: qd.PayloadHash(), EnqueuedAt: qd.EnqueuedAt,
			FallbackOf: qd.FallbackOf,
		}, msg)
		if errors.Is(err, idempotency.ErrNotApplicable) {
			return c.cancelConflict(ctx, id, qd.Kind, qd.Key)
		}
	case leveetype.StateRetrying:
		if st.DuplicateOf != "" {
			return fmt.Errorf("%w: job %s is a duplicate of %s", ErrConflict, id, st.DuplicateOf)
		}
		cancelled, err = c.conn.Ledger.CancelRetrying(ctx, st.Kind, st.Key, id, msg)
		if errors.Is(err, idempotency.ErrNotApplicable) {
			return c.cancelConflict(ctx, id, st.Kind, st.Key)
		}
	case leveetype.StateRunning:
		return fmt.Errorf("%w: job %s is running; cancel applies to queued and retrying jobs (pause the kind to stop new attempts)", ErrConflict, id)
	default:
		return fmt.Errorf("%w: job %s is already %s", ErrConflict, id, st.State)
	}
	if err != nil {
		return err
	}
	if qerr == nil {
		// The copy carries the message's sequence, as a worker's would, so a worker that
		// copies it again on delivery stores it once.
		err = c.conn.Q.DeadLetter(ctx, qd.Envelope, qd.Data, qd.Header, queue.DeadInfo{
			Reason: ReasonCancelled, Attempts: cancelled.Attempts, LastError: msg,
			FirstFailedAt: cancelled.FirstFailedAt, FailedAt: cancelled.FinishedAt, Worker: "operator:" + string(by),
			SourceSeq: qd.Sequence,
		})
		if err != nil {
			return fmt.Errorf("job %s is cancelled; its dead-letter copy failed and is made when a worker receives it: %w", id, err)
		}
	}
	return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "cancel", Target: id, Detail: "was " + string(st.State)})
}

// cancelScheduled cancels job id, scheduled, with message as its last error: its row goes,
// its key is dead with reason cancelled, and a copy goes to the dead-letter queue, as for a
// queued job, so that JobRetry can bring it back. It returns idempotency.ErrNotFound when the
// job left the schedule meanwhile.
func (c *Client) cancelScheduled(ctx context.Context, id string, by leveetype.Actor, msg string) error {
	j, cancelled, err := c.conn.Ledger.CancelScheduledJob(ctx, id, msg)
	if errors.Is(err, idempotency.ErrNotApplicable) {
		return fmt.Errorf("%w: job %s was published and taken by a worker meanwhile; look again", ErrConflict, id)
	}
	if err != nil {
		return err
	}
	detail := "was scheduled for " + rfc3339(&j.RunAt) + " (" + j.Origin + ")"
	if err := c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "cancel", Target: id, Detail: detail}); err != nil {
		return err
	}
	env := queue.Envelope{ID: j.ID, Kind: j.Kind, Key: j.Key, Payload: j.Payload, MaxAttempts: j.MaxAttempts, EnqueuedAt: j.CreatedAt}
	m := c.conn.Q.Names().Msg(env)
	err = c.conn.EnsureStreams(ctx)
	if err == nil {
		err = c.conn.Q.DeadLetter(ctx, env, m.Data, m.Header, queue.DeadInfo{
			Reason: ReasonCancelled, LastError: cancelled.LastError, FirstFailedAt: cancelled.FirstFailedAt,
			FailedAt: cancelled.FinishedAt, Worker: "operator:" + string(by),
		})
	}
	if err != nil {
		return fmt.Errorf("job %s is cancelled and will not run, but its dead-letter copy failed, so retry cannot bring it back (publish it again instead): %w", id, err)
	}
	return nil
}

// rfc3339 writes t in UTC to the second, "-" for nil.
func rfc3339(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// actionStatus is the status of the job an action is about, which needs the ledger.
func (c *Client) actionStatus(ctx context.Context, id string) (*leveetype.JobStatus, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	return c.JobGet(ctx, id)
}

// cancelConflict explains why a cancel found the key in another state than expected.
func (c *Client) cancelConflict(ctx context.Context, id, kind, key string) error {
	st, err := c.JobGet(ctx, id)
	switch {
	case err == nil && st.State != leveetype.StateQueued && st.DuplicateOf == "":
		return fmt.Errorf("%w: job %s became %s meanwhile", ErrConflict, id, st.State)
	case err != nil && !errors.Is(err, ErrNotFound):
		return err
	}
	return fmt.Errorf("%w: job %s shares idempotency key %s/%s with another job that holds it; cancel that job instead", ErrConflict, id, kind, key)
}

func conflictIfNotApplicable(err error, id string) error {
	if errors.Is(err, idempotency.ErrNotApplicable) {
		return fmt.Errorf("%w: job %s changed state meanwhile; look again", ErrConflict, id)
	}
	return err
}

// KindPause stops every worker of the fleet from pulling kind: in-flight attempts finish, and
// its messages wait in NATS. The pause persists (in the control bucket <NS>_CONTROL; workers
// that start meanwhile start paused) until KindResume. Workers apply it within milliseconds;
// a pull already waiting may still take one batch. A kind Levee knows nothing of is refused
// with ErrUnknownKind.
func (c *Client) KindPause(ctx context.Context, kind string, by leveetype.Actor) error {
	if err := c.checkKind(ctx, kind); err != nil {
		return err
	}
	if err := c.fleet.Pause(ctx, kind, string(by)); err != nil {
		return err
	}
	return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "pause", Target: kind})
}

// KindResume lets the fleet pull kind again. Resuming a kind that is not paused does nothing
// (and is still audited); a kind Levee knows nothing of is refused with ErrUnknownKind.
func (c *Client) KindResume(ctx context.Context, kind string, by leveetype.Actor) error {
	if err := c.checkKind(ctx, kind); err != nil {
		return err
	}
	if err := c.fleet.Resume(ctx, kind); err != nil {
		return err
	}
	return c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "resume", Target: kind})
}

// BreakerResetParams says which kind's breaker to reset, who does it, and how long to wait for
// the live workers to apply it.
type BreakerResetParams struct {
	Kind string
	By   leveetype.Actor
	// Wait bounds the wait for the kind's live workers to apply the reset; 0 does not wait.
	Wait time.Duration
}

// resetPoll is how often BreakerReset looks at the fleet registry while it waits.
const resetPoll = 100 * time.Millisecond

// BreakerResetResult is what BreakerReset did.
type BreakerResetResult struct {
	// Gen is the generation of the shared record the reset wrote; 0 when the kind has no
	// shared breaker (no worker with scope fleet has served it).
	Gen uint64
	// Workers counts the live workers serving the kind; Acknowledged those that had applied
	// the reset (their breaker closed, at Gen or later) when the wait ended.
	Workers, Acknowledged int
}

// BreakerReset closes a kind's circuit breaker for the whole fleet: the shared breaker (scope
// fleet) once, in its record, and each worker's own (scope worker) on every live worker. Each
// worker empties its window and admits calls at once; if the downstream is still failing, the
// breaker opens again. It then waits up to p.Wait for the live workers serving the kind to
// apply the reset and says how many did. A kind Levee knows nothing of is refused with
// ErrUnknownKind.
func (c *Client) BreakerReset(ctx context.Context, p BreakerResetParams) (BreakerResetResult, error) {
	kind, by, wait := p.Kind, p.By, p.Wait
	var res BreakerResetResult
	if err := c.checkKind(ctx, kind); err != nil {
		return res, err
	}
	if err := c.fleet.ResetBreaker(ctx, kind, string(by)); err != nil {
		return res, err
	}
	store, err := c.fleet.Breakers(ctx, false)
	if err != nil {
		return res, err
	}
	entries, err := c.fleet.Entries(ctx)
	if err != nil {
		return res, err
	}
	shared := slices.ContainsFunc(entries[kind], func(e fleet.Entry) bool { return e.BreakerFleet })
	if store != nil {
		if _, _, found, err := store.Get(ctx, kind); err != nil {
			return res, err
		} else if found || shared { // a deleted record is written again, closed
			v, _, err := store.Update(ctx, kind, func(cur []byte, _ bool) ([]byte, bool, error) {
				next, err := json.Marshal(executor.ParseShared(cur).Reset(time.Now().UTC(), string(by)))
				return next, true, err
			})
			if err != nil {
				return res, err
			}
			res.Gen = executor.ParseShared(v).Gen
		}
	}
	if err := c.AuditRecord(ctx, AuditRecordParams{By: by, Action: "breaker_reset", Target: kind}); err != nil {
		return res, err
	}
	count := func(ctx context.Context) error {
		entries, err := c.fleet.Entries(ctx)
		if err != nil {
			return err
		}
		res.Workers, res.Acknowledged = len(entries[kind]), 0
		for _, e := range entries[kind] {
			// A fleet breaker's worker has applied the reset once its generation is the
			// reset's or later (reopened at once if the downstream still fails); a worker's
			// own breaker once it is closed.
			if e.BreakerFleet && !e.BreakerCutOff && e.BreakerGen >= res.Gen ||
				!e.BreakerFleet && e.Breaker == executor.BreakerClosed.String() {
				res.Acknowledged++
			}
		}
		return nil
	}
	if err := count(ctx); err != nil || res.Acknowledged == res.Workers || wait <= 0 {
		return res, err
	}
	wctx, cancel := context.WithTimeout(ctx, max(wait, resetPoll)) // at least one more look
	defer cancel()
	every.Do(wctx, resetPoll, false, func(wctx context.Context) bool {
		if e := count(wctx); e != nil {
			if wctx.Err() == nil {
				err = e
			}
			return false
		}
		return res.Acknowledged < res.Workers
	})
	return res, err
}

// AuditRecordParams is one operator action to record.
type AuditRecordParams struct {
	By     leveetype.Actor
	Action string
	Target string
	Detail string
}

// AuditRecord records an operator action: a row in the ledger's audit_log table and a log
// line. The actions of this package call it themselves. Without a ledger only the log line is
// written.
func (c *Client) AuditRecord(ctx context.Context, p AuditRecordParams) error {
	c.conn.Logger.Info("operator action", "actor", string(p.By), "action", p.Action, "target", p.Target, "detail", p.Detail)
	if c.conn.Ledger == nil {
		return nil
	}
	return c.conn.Ledger.Audit(ctx, string(p.By), p.Action, p.Target, p.Detail)
}

// AuditList returns the newest limit entries of the audit log, newest first (limit 0: 50).
func (c *Client) AuditList(ctx context.Context, limit int) ([]leveetype.AuditEntry, error) {
	if c.conn.Ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if limit <= 0 {
		limit = 50
	}
	return c.conn.Ledger.AuditLog(ctx, limit)
}
