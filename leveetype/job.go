package leveetype

import (
	"encoding/json"
	"fmt"
	"time"
)

// Job is one job as a handler sees it.
type Job struct {
	// ID is the job's id (a ULID unless the publisher chose one).
	ID string
	// Kind names the job's handler.
	Kind string
	// Key is the idempotency key (default: ID). Send it to downstreams that honour
	// idempotency keys: it is the same for every attempt and every worker.
	Key string
	// Payload is the job's JSON payload.
	Payload json.RawMessage
	// Attempt counts attempts on the job's key, from 1.
	Attempt int
	// MaxAttempts is the job's attempt budget.
	MaxAttempts int
	// EnqueuedAt is when the job was published.
	EnqueuedAt time.Time
	// Fence identifies this attempt's claim of the job's key in the ledger: every claim of a
	// key (a retry, or a takeover from a worker that died or lost its lease) has a higher
	// fence than the claims before it. A downstream that stores the highest fence it has
	// seen per key can refuse a call carrying a lower one: a stale worker's late write.
	Fence int64
}

// Decode unmarshals the payload into v.
func (j *Job) Decode(v any) error {
	if err := json.Unmarshal(j.Payload, v); err != nil {
		return fmt.Errorf("decode payload of job %s: %w", j.ID, err)
	}
	return nil
}
