package levee

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/levee-dev/levee/leveetype"
)

// Job is one job as a handler sees it (see leveetype.Job).
type Job = leveetype.Job

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
