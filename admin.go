package levee

import (
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// This file is the operator service layer: the methods the `enqueue` commands and the
// dashboard share (never a second implementation). Reads need the ledger (ClientConfig
// DatabaseURL or Pool); every action is written to the audit log with who did it.

// Actor names who did an operator action; it is written to the audit log.
type Actor string

// ErrNotFound is returned for a job id (or key) that Levee does not know. It is ErrJobNotFound,
// so errors.Is matches either.
var ErrNotFound = ErrJobNotFound

// ErrConflict is returned (wrapping a message that says why) for an action that does not apply
// to the job's current state, such as cancelling a running or finished job.
var ErrConflict = errors.New("the action does not apply to the job's current state")

// ReasonCancelled is the dead reason of a job an operator cancelled.
const ReasonCancelled = idempotency.ReasonCancelled

// FindJobs finds the job with id idOrKey or else the jobs whose idempotency key it is (across
// kinds, newest first). It returns an error wrapping ErrNotFound when there are none.
func (c *Client) FindJobs(ctx context.Context, idOrKey string) ([]JobStatus, error) {
	if queue.ValidateID(idOrKey) == nil {
		st, err := c.Status(ctx, idOrKey)
		if err == nil {
			return []JobStatus{*st}, nil
		}
		if !errors.Is(err, ErrJobNotFound) {
			return nil, err
		}
	}
	if c.ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if err := queue.ValidateKey(idOrKey); err != nil {
		return nil, fmt.Errorf("%w: %q is neither a job id nor an idempotency key", ErrNotFound, idOrKey)
	}
	sts, err := c.ledger.FindByKey(ctx, idOrKey)
	if err != nil {
		return nil, err
	}
	if len(sts) == 0 {
		return nil, fmt.Errorf("%w: no job has the id or idempotency key %q", ErrNotFound, idOrKey)
	}
	out := make([]JobStatus, len(sts))
	for i := range sts {
		out[i] = *fromLedger(&sts[i])
	}
	return out, nil
}

// JobFilter selects jobs for Jobs. Zero fields select all.
type JobFilter struct {
	// State is one of running, retrying, succeeded, dead; "" for any. Queued jobs wait in NATS,
	// not in the ledger, so StateQueued is refused (Stats counts them per kind).
	State State
	Kind  string
	// Since and Until bound the job's enqueued time (Since <= t < Until); zero is open. A job
	// whose enqueued time is unknown (a malformed message) counts by when it was recorded.
	Since, Until time.Time
	// Cursor continues a listing: Next of the previous page. "" is the first page.
	Cursor string
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// JobPage is one page of Jobs.
type JobPage struct {
	Jobs []JobStatus
	// Next is the cursor of the next page, "" when there is no more.
	Next string
}

// ErrBadFilter is returned (wrapped) by Jobs for a filter it cannot apply.
var ErrBadFilter = errors.New("invalid job filter")

// Default and largest page sizes of Jobs.
const (
	DefaultJobsLimit = 50
	MaxJobsLimit     = 500
)

// Jobs lists the ledger's jobs newest first (by enqueued time, then id) with keyset paging:
// each page is one index range scan per ledger table, never OFFSET and never a count, so a
// page costs the same on a ledger of any size. Rows inserted while paging appear at most once,
// and rows that existed when paging began appear exactly once (unless they changed owner).
func (c *Client) Jobs(ctx context.Context, f JobFilter) (JobPage, error) {
	if c.ledger == nil {
		return JobPage{}, ErrDatabaseRequired
	}
	q := idempotency.JobQuery{Kind: f.Kind, Since: f.Since, Until: f.Until}
	switch f.State {
	case "":
	case StateRunning, StateRetrying, StateSucceeded, StateDead:
		q.State = idempotency.State(f.State)
	case StateQueued:
		return JobPage{}, fmt.Errorf("%w: state queued: queued jobs wait in NATS, not in the ledger; see Stats for their count per kind, or Status by id", ErrBadFilter)
	default:
		return JobPage{}, fmt.Errorf("%w: unknown state %q (use running, retrying, succeeded or dead)", ErrBadFilter, f.State)
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
	sts, err := c.ledger.ListJobs(ctx, q)
	if err != nil {
		return JobPage{}, err
	}
	page := JobPage{Jobs: make([]JobStatus, 0, len(sts))}
	more := len(sts) == q.Limit
	if more {
		sts = sts[:q.Limit-1]
	}
	for i := range sts {
		page.Jobs = append(page.Jobs, *fromLedger(&sts[i]))
	}
	if more && len(sts) > 0 {
		last := sts[len(sts)-1]
		page.Next = encodeCursor(last.SortAt, last.JobID)
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
	return time.Time{}, "", fmt.Errorf("%w: cursor %q is not one Jobs returned", ErrBadFilter, s)
}

// Attempt is one attempt of a job.
type Attempt struct {
	N          int        `json:"n"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// Outcome is succeeded, failed, timed_out, released (given back at shutdown, not counted)
	// or running (the attempt in progress).
	Outcome string `json:"outcome"`
	Error   string `json:"error"`
	Worker  string `json:"worker"`
}

// Attempts returns job id's attempt timeline, oldest first, with a last "running" entry while
// an attempt is in progress. Attempts are written by the worker in the same statement (and
// group commit) as their outcome. A known job with no attempt yet (queued, or a duplicate that
// never ran) has an empty timeline; an unknown id returns an error wrapping ErrNotFound.
func (c *Client) Attempts(ctx context.Context, id string) ([]Attempt, error) {
	if c.ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if err := queue.ValidateID(id); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	rows, err := c.ledger.Attempts(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		if _, err := c.Status(ctx, id); err != nil {
			return nil, err
		}
	}
	out := make([]Attempt, len(rows))
	for i, r := range rows {
		out[i] = Attempt{N: r.N, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt, Outcome: r.Outcome, Error: r.Error, Worker: r.Worker}
	}
	return out, nil
}

// RetryJob runs a job again: a dead job's DLQ entry is replayed exactly as `enqueue dlq
// replay` does (Replay); a retrying job is made due now and a copy of its message is published
// so a worker takes it at once (the original message, delivered later, finds the key settled or
// busy and never runs the job twice). Any other state returns ErrConflict with the reason.
func (c *Client) RetryJob(ctx context.Context, id string, by Actor) error {
	st, err := c.actionStatus(ctx, id)
	if err != nil {
		return err
	}
	switch st.State {
	case StateDead:
		dj, err := c.DeadJob(ctx, id)
		if errors.Is(err, ErrJobNotFound) {
			return fmt.Errorf("%w: job %s is dead but has no dead-letter entry (purged?); publish it again instead", ErrConflict, id)
		}
		if err != nil {
			return err
		}
		res, err := c.Replay(ctx, *dj, ReplayOptions{})
		if errors.Is(err, ErrKeyDeadElsewhere) {
			return fmt.Errorf("%w: %w", ErrConflict, err)
		}
		if err != nil {
			return err
		}
		return c.Audit(ctx, by, "retry", id, "replayed from the dead-letter queue; key was "+cmp.Or(res.KeyState, "absent"))
	case StateRetrying:
		if st.DuplicateOf != "" {
			return fmt.Errorf("%w: job %s is a duplicate of %s", ErrConflict, id, st.DuplicateOf)
		}
		qd, err := c.q.FindQueued(ctx, id)
		if err != nil {
			return fmt.Errorf("%w: job %s is retrying but its message is not in the work stream: %w", ErrConflict, id, err)
		}
		if err := c.ledger.MakeDue(ctx, st.Kind, st.Key, id); err != nil {
			return conflictIfNotApplicable(err, id)
		}
		env := qd.Envelope
		if err := c.q.Replay(ctx, env, fmt.Sprintf("retry:%s:%d", id, time.Now().UnixNano())); err != nil {
			return translatePublish(err)
		}
		return c.Audit(ctx, by, "retry", id, "retrying job made due now")
	}
	return fmt.Errorf("%w: job %s is %s; only dead and retrying jobs can be retried", ErrConflict, id, st.State)
}

// CancelJob stops a queued or retrying job from running again: it ends dead with reason
// "cancelled", and its copy goes to the dead-letter queue so it can be replayed. The ledger is
// written first: a worker that receives the job's message finds its key dead and terminates
// it without running it. A running or finished job returns ErrConflict.
func (c *Client) CancelJob(ctx context.Context, id string, by Actor) error {
	st, err := c.actionStatus(ctx, id)
	if err != nil {
		return err
	}
	msg := "cancelled by " + string(by)
	var cancelled *idempotency.Cancelled
	qd, qerr := c.q.FindQueued(ctx, id)
	switch st.State {
	case StateQueued:
		if qerr != nil {
			return fmt.Errorf("%w: job %s left the work stream meanwhile: %w", ErrConflict, id, qerr)
		}
		cancelled, err = c.ledger.CancelQueued(ctx, idempotency.ClaimRequest{
			JobID: id, Kind: qd.Kind, Key: qd.Key, PayloadHash: qd.PayloadHash(), EnqueuedAt: qd.EnqueuedAt,
			FallbackOf: qd.FallbackOf,
		}, msg)
		if errors.Is(err, idempotency.ErrNotApplicable) {
			return c.cancelConflict(ctx, id, qd.Kind, qd.Key)
		}
	case StateRetrying:
		if st.DuplicateOf != "" {
			return fmt.Errorf("%w: job %s is a duplicate of %s", ErrConflict, id, st.DuplicateOf)
		}
		cancelled, err = c.ledger.CancelRetrying(ctx, st.Kind, st.Key, id, msg)
		if errors.Is(err, idempotency.ErrNotApplicable) {
			return c.cancelConflict(ctx, id, st.Kind, st.Key)
		}
	case StateRunning:
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
		err = c.q.DeadLetter(ctx, qd.Envelope, qd.Data, qd.Header, queue.DeadInfo{
			Reason: ReasonCancelled, Attempts: cancelled.Attempts, LastError: msg,
			FirstFailedAt: cancelled.FirstFailedAt, FailedAt: cancelled.FinishedAt, Worker: "operator:" + string(by),
			SourceSeq: qd.Sequence,
		})
		if err != nil {
			return fmt.Errorf("job %s is cancelled; its dead-letter copy failed and is made when a worker receives it: %w", id, err)
		}
	}
	return c.Audit(ctx, by, "cancel", id, "was "+string(st.State))
}

// actionStatus is the status of the job an action is about, which needs the ledger.
func (c *Client) actionStatus(ctx context.Context, id string) (*JobStatus, error) {
	if c.ledger == nil {
		return nil, ErrDatabaseRequired
	}
	return c.Status(ctx, id)
}

// cancelConflict explains why a cancel found the key in another state than expected.
func (c *Client) cancelConflict(ctx context.Context, id, kind, key string) error {
	st, err := c.Status(ctx, id)
	switch {
	case err == nil && st.State != StateQueued && st.DuplicateOf == "":
		return fmt.Errorf("%w: job %s became %s meanwhile", ErrConflict, id, st.State)
	case err != nil && !errors.Is(err, ErrJobNotFound):
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

// PauseKind stops every worker of the fleet from pulling kind: in-flight attempts finish, and
// its messages wait in NATS. The pause persists (in the control bucket <NS>_CONTROL; workers
// that start meanwhile start paused) until ResumeKind. Workers apply it within milliseconds;
// a pull already waiting may still take one batch.
func (c *Client) PauseKind(ctx context.Context, kind string, by Actor) error {
	if err := c.q.Pause(ctx, kind, string(by)); err != nil {
		return err
	}
	return c.Audit(ctx, by, "pause", kind, "")
}

// ResumeKind lets the fleet pull kind again. Resuming a kind that is not paused does nothing
// (and is still audited).
func (c *Client) ResumeKind(ctx context.Context, kind string, by Actor) error {
	if err := c.q.Resume(ctx, kind); err != nil {
		return err
	}
	return c.Audit(ctx, by, "resume", kind, "")
}

// ResetBreaker closes kind's circuit breaker on every live worker (each empties its window and
// admits calls at once). If the downstream is still failing, the breakers open again.
func (c *Client) ResetBreaker(ctx context.Context, kind string, by Actor) error {
	if err := c.q.ResetBreaker(ctx, kind, string(by)); err != nil {
		return err
	}
	return c.Audit(ctx, by, "breaker_reset", kind, "")
}

// AuditEntry is one operator action in the audit log.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Actor  Actor     `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// Audit records an operator action: a row in the ledger's audit_log table and a log line. The
// actions above call it themselves. Without a ledger only the log line is written.
func (c *Client) Audit(ctx context.Context, by Actor, action, target, detail string) error {
	c.logger.Info("operator action", "actor", string(by), "action", action, "target", target, "detail", detail)
	if c.ledger == nil {
		return nil
	}
	return c.ledger.Audit(ctx, string(by), action, target, detail)
}

// AuditLog returns the newest limit entries of the audit log, newest first (limit 0: 50).
func (c *Client) AuditLog(ctx context.Context, limit int) ([]AuditEntry, error) {
	if c.ledger == nil {
		return nil, ErrDatabaseRequired
	}
	if limit <= 0 {
		limit = 50
	}
	es, err := c.ledger.AuditLog(ctx, limit)
	if err != nil {
		return nil, err
	}
	out := make([]AuditEntry, len(es))
	for i, e := range es {
		out[i] = AuditEntry{At: e.At, Actor: Actor(e.Actor), Action: e.Action, Target: e.Target, Detail: e.Detail}
	}
	return out, nil
}
