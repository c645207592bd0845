package leveetype

import (
	"encoding/json"
	"time"
)

// State is a job's state as Status reports it. The ledger stores the same strings.
type State string

// The states of a job. Succeeded and Dead are final.
const (
	StateScheduled State = "scheduled" // waiting in the ledger until RunAt (delayed, periodic, or published in a transaction)
	StateQueued    State = "queued"    // waiting in the stream, not yet picked up
	StateRunning   State = "running"   // an attempt holds the job's lease
	StateRetrying  State = "retrying"  // failed, next attempt at NextAttemptAt
	StateSucceeded State = "succeeded" // done; Result holds the handler's result
	StateDead      State = "dead"      // dead-lettered; Reason says why
	StateUnknown   State = "unknown"   // neither in the stream nor in the ledger
)

// Final reports whether s is a final state.
func (s State) Final() bool { return s == StateSucceeded || s == StateDead }

// JobStatus is what Levee knows of one job. Its JSON form, with every key present (empty
// ones as "", 0 or null), is what `enqueue status --json` prints.
type JobStatus struct {
	State       State           `json:"state"`
	ID          string          `json:"id"`
	Kind        string          `json:"kind"`
	Key         string          `json:"key"`
	Attempts    int             `json:"attempts"`
	Reason      string          `json:"reason"`
	LastError   string          `json:"last_error"`
	Result      json.RawMessage `json:"result"`
	NextAttempt *time.Time      `json:"next_attempt_at"`
	EnqueuedAt  *time.Time      `json:"enqueued_at"`
	StartedAt   *time.Time      `json:"started_at"`
	FinishedAt  *time.Time      `json:"finished_at"`
	// RunAt is when a scheduled job is due (null in every other state).
	RunAt *time.Time `json:"run_at"`
	// DuplicateOf is the id of the job that did the work, when this job was a duplicate of
	// its key.
	DuplicateOf string `json:"duplicate_of"`
	// FallbackOf is the job this one replaces: that job's kind gave up on it and handed it
	// here with the same key and payload. FallbackTo is the job that replaced this one (its
	// state is then dead with reason fell_back; follow FallbackTo for the outcome).
	FallbackOf string `json:"fallback_of"`
	FallbackTo string `json:"fallback_to"`
}

// Attempt is one attempt of a job.
type Attempt struct {
	N          int        `json:"n"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at"`
	// Outcome is succeeded, failed, timed_out, released (given back at shutdown, not counted)
	// or running (the attempt in progress); or replayed, an entry that is no attempt: the job
	// was replayed from the dead-letter queue then (N 0, Worker who replayed it), and the
	// attempts after it count from 1 again.
	Outcome string `json:"outcome"`
	Error   string `json:"error"`
	Worker  string `json:"worker"`
}

// ReasonCancelled is the dead reason of a job an operator cancelled.
const ReasonCancelled = "cancelled"

// Actor names who did an operator action; it is written to the audit log.
type Actor string

// AuditEntry is one operator action in the audit log.
type AuditEntry struct {
	At     time.Time `json:"at"`
	Actor  Actor     `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// DeadJob is one job in the dead-letter queue, with everything known of its death. Its JSON
// form is what `enqueue dlq show --json` prints.
type DeadJob struct {
	ID            string            `json:"id"`
	Kind          string            `json:"kind"`
	Key           string            `json:"key"`
	Reason        string            `json:"reason"`
	Attempts      int               `json:"attempts"`
	LastError     string            `json:"last_error"`
	FirstFailedAt time.Time         `json:"first_failed_at"`
	FailedAt      time.Time         `json:"failed_at"`
	Worker        string            `json:"worker"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers"`
	// Sequence is the entry's position in the DLQ stream.
	Sequence uint64 `json:"dlq_seq"`
}
