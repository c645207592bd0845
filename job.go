package levee

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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

// Handler runs one attempt of a job. It returns a result, stored as JSON and reported by
// status (nil for none), or an error: retried by default, see Permanent and RetryAfter.
// The context ends at the attempt's timeout, at a hard shutdown, or when the worker loses
// the job's lease (its cause is then ErrLeaseLost); a handler must return soon after, and
// must stop calling downstreams: another worker may take the job over a margin after that
// cancel (ack_wait/10, from 250 ms to 5 s). Call CheckLease right before an irreversible call.
type Handler interface {
	Work(ctx context.Context, job *Job) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, job *Job) (any, error)

// Work calls f.
func (f HandlerFunc) Work(ctx context.Context, job *Job) (any, error) { return f(ctx, job) }

// TxHandler is a Handler whose local effects go in tx, a transaction on the ledger's database:
// Levee commits tx together with the job's success, so the effects happen exactly once, or
// rolls it back when the attempt fails or the worker lost the job's lease (design rule 13).
// The handler must not commit or roll back tx itself.
type TxHandler interface {
	WorkTx(ctx context.Context, tx pgx.Tx, job *Job) (any, error)
}

// TxHandlerFunc adapts a function to TxHandler.
type TxHandlerFunc func(ctx context.Context, tx pgx.Tx, job *Job) (any, error)

// WorkTx calls f.
func (f TxHandlerFunc) WorkTx(ctx context.Context, tx pgx.Tx, job *Job) (any, error) {
	return f(ctx, tx, job)
}
