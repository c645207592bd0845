package levee

import (
	"context"
	"errors"
	"time"

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
)

// PermanentError marks an error that retrying cannot fix. Test with errors.As.
type PermanentError = executor.PermanentError

// RetryAfterError asks for the next attempt after a delay. Test with errors.As.
type RetryAfterError = executor.RetryAfterError

// Permanent marks err as permanent: the job is dead-lettered after this attempt with reason
// "permanent_error". Permanent(nil) is nil.
func Permanent(err error) error { return executor.Permanent(err) }

// RetryAfter asks for the next attempt no sooner than d (for example an HTTP Retry-After). It
// uses an attempt like any retry.
func RetryAfter(d time.Duration, err error) error { return executor.RetryAfter(d, err) }

// ErrLeaseLost is the cause (context.Cause) of a handler's context ending because its worker
// lost the job's lease: Postgres did not confirm an extension in time, or another worker took
// the job over. The attempt writes nothing more; the job runs again elsewhere (design rule 29).
var ErrLeaseLost = idempotency.ErrLeaseLost

// CheckLease returns nil while the lease of the attempt whose context is ctx is known to hold,
// and otherwise why the attempt must stop (ErrLeaseLost, its timeout, a shutdown). Call it right
// before an irreversible call: it judges the lease's deadline at that moment, so a worker
// process woken after being frozen past its lease stops before calling, even before its timers
// have cancelled the context. (A downstream that refuses calls carrying a lower Job.Fence than
// it has seen is the complete defence against a stale worker.) Outside an attempt it returns
// ctx.Err().
func CheckLease(ctx context.Context) error { return worker.CheckLease(ctx) }

// ErrJobNotFound is returned by Client.Status for an id that is neither in the stream nor in
// the ledger.
var ErrJobNotFound = core.ErrJobNotFound

// ErrDatabaseRequired is returned (wrapped) by what needs the Postgres ledger when the Client
// has none (ClientConfig.DatabaseURL or Pool): a delayed publish, a key check, the status of
// a running or finished job.
var ErrDatabaseRequired = core.ErrDatabaseRequired

// ErrPayloadTooLarge is returned (wrapped, saying by how much) by Publish and PublishBatch for
// a payload over ClientConfig.MaxPayload, or one that with the job's headers would be over the
// NATS server's max_payload.
var ErrPayloadTooLarge = queue.ErrPayloadTooLarge

// ErrKeyReused is returned by Publish with JobSpec.CheckKey when the job's key was used with
// another payload: nothing is published.
var ErrKeyReused = errors.New("idempotency key reused with another payload")

// ErrStreamFull is returned by Publish when the work stream is at its limits: queued work is
// never evicted, so the publisher must wait or the operator raise the limits.
var ErrStreamFull = core.ErrStreamFull
