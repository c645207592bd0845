package admin

import (
	"context"
	"errors"
	"fmt"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
)

// ErrKindServed is returned by OrphanCapture for a kind that a worker serves: its durable
// consumer exists (a worker served it once) or live workers of the kind are in the fleet. Stop
// the kind's workers, or force the capture.
var ErrKindServed = errors.New("a worker serves this kind")

// captureWorker is the Worker recorded on the dead-letter copies OrphanCapture makes.
const captureWorker = "enqueue"

// captureBatch is how many jobs OrphanCapture takes from the stream at a time.
const captureBatch = 100

// OrphanCaptureParams says which orphaned jobs to capture.
type OrphanCaptureParams struct {
	// Kind is the kind no worker serves.
	Kind string
	// Limit is the most jobs to capture; 0 means no limit.
	Limit int
	// Force captures even though the kind's durable consumer exists or it has live workers.
	Force bool
	// OnJob, if not nil, is called with each job's id once it is captured.
	OnJob func(id string)
}

// OrphanCapture moves the jobs of p.Kind, a kind that no worker serves, from the work stream to
// the dead-letter queue with reason "no_handler" (or "malformed" for a message that is not a
// valid job), where they can be inspected, replayed once a worker serves the kind, or purged.
// It takes the jobs stored when it starts, oldest first, at most p.Limit of them, calls p.OnJob
// with each job's id once it is captured, and returns how many it captured.
//
// Each job is recorded dead in the ledger first (ledger MarkDead: a job that owns its key and
// is retrying kills the key; any other becomes an unowned dead record, so Status reports dead
// with the reason), then copied to the dead-letter queue (deduplicated, as a worker does),
// then acked, which removes it from the work stream. A failed step leaves the job in the
// stream and ends the capture with an error; running it again is safe. A job whose key has
// already succeeded is a duplicate whose effect is done: it is acked without a dead-letter
// copy, and not counted. This takes one ledger transaction per job.
//
// It refuses, with an error wrapping ErrKindServed, a kind whose durable consumer exists or
// that has live workers, unless p.Force is set: then it reads through the kind's consumer if
// there is one (taking the jobs that no worker holds at that moment), so use it when the
// kind's workers are gone for good. Without Force the jobs are read through a temporary
// consumer, during which no worker of the kind can start. It needs the ledger: without a
// database it returns ErrDatabaseRequired.
func (c *Client) OrphanCapture(ctx context.Context, p OrphanCaptureParams) (int, error) {
	kind, limit, force, onJob := p.Kind, p.Limit, p.Force, p.OnJob
	if err := queue.ValidateKind(kind); err != nil {
		return 0, err
	}
	if limit < 0 {
		return 0, fmt.Errorf("capture orphans of kind %q: limit must not be negative, got %d", kind, limit)
	}
	if c.conn.Ledger == nil {
		return 0, ErrDatabaseRequired
	}
	if err := c.conn.Ledger.CheckMigrated(ctx); err != nil {
		return 0, fmt.Errorf("capture orphans of kind %q: %w (run `worker migrate`, or start a worker, first)", kind, err)
	}
	served, err := c.conn.Q.ConsumerExists(ctx, kind)
	if errors.Is(err, queue.ErrNoStream) {
		return 0, nil // no work stream: nothing waits
	}
	if err != nil {
		return 0, err
	}
	members, err := c.fleet.Members(ctx)
	if err != nil {
		return 0, err
	}
	if workers := len(members[kind]); (served || workers > 0) && !force {
		return 0, servedError(kind, served, workers)
	}
	if err := c.conn.EnsureStreams(ctx); err != nil { // the DLQ stream may not exist yet
		return 0, err
	}
	r, err := c.conn.Q.OpenOrphanReader(ctx, kind, served)
	if errors.Is(err, queue.ErrKindTaken) {
		return 0, fmt.Errorf("capture orphans of kind %q: %w: %w", kind, ErrKindServed, err)
	}
	if err != nil {
		return 0, fmt.Errorf("capture orphans of kind %q: %w", kind, err)
	}
	n, err := c.capture(ctx, r, kind, limit, onJob)
	if cerr := r.Close(ctx); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("capture orphans of kind %q (%d captured): %w", kind, n, err)
	}
	return n, nil
}

// servedError says why kind counts as served.
func servedError(kind string, consumer bool, workers int) error {
	live := fmt.Sprintf("%d live workers serve it", workers)
	if workers == 1 {
		live = "1 live worker serves it"
	}
	var why string
	switch {
	case consumer && workers > 0:
		why = "its durable consumer exists and " + live
	case consumer:
		why = "its durable consumer exists (a worker served it once; none is live now)"
	default:
		why = live
	}
	return fmt.Errorf("capture orphans of kind %q: %w: %s", kind, ErrKindServed, why)
}

// capture moves the reader's jobs, up to limit (0: all), and returns how many it dead-lettered.
func (c *Client) capture(ctx context.Context, r *queue.OrphanReader, kind string, limit int, onJob func(string)) (int, error) {
	captured := 0
	notJobs := map[uint64]bool{} // by stream sequence: one may come back after its AckWait
	for limit == 0 || captured < limit {
		want := captureBatch
		if limit > 0 {
			want = min(want, limit-captured)
		}
		ds, err := r.Next(ctx, want)
		if err != nil {
			return captured, err
		}
		if len(ds) == 0 {
			break
		}
		for i, d := range ds {
			if queue.ValidateID(d.Env.ID) != nil {
				// No id to record or copy it under: leave it (unacked, it goes back to the
				// stream when the reader closes).
				notJobs[d.StreamSeq] = true
				continue
			}
			dead, err := c.captureOne(ctx, r, kind, d)
			if err != nil {
				for _, rest := range ds[i:] {
					_ = rest.Nak(0)
				}
				return captured, err
			}
			if dead {
				captured++
				if onJob != nil {
					onJob(d.Env.ID)
				}
			}
		}
	}
	if len(notJobs) > 0 {
		return captured, fmt.Errorf("%d messages are not jobs (their subjects hold no valid job id) and were left in the work stream; remove them with `nats stream rmm`", len(notJobs))
	}
	return captured, nil
}

// captureOne records d dead, copies it to the DLQ and acks it, through the worker's one
// dead-letter path (design rule 32). It reports whether it dead-lettered d: false with a nil
// error means d's key had succeeded, and d was acked as a duplicate.
func (c *Client) captureOne(ctx context.Context, r *queue.OrphanReader, kind string, d *queue.Delivery) (bool, error) {
	action, err := worker.SettleStranded(ctx, c.conn.Ledger, c.conn.Q, worker.Stranded{
		Job:    &queue.StoredJob{Env: d.Env, DecodeErr: d.DecodeErr, Data: d.Data(), Header: d.Headers(), Seq: d.StreamSeq},
		Reason: executor.ReasonNoHandler, Error: fmt.Sprintf("no worker serves kind %q: captured from the work stream", kind),
		Worker: captureWorker, Force: true,
	}, func(ctx context.Context) error { return r.Ack(ctx, d) })
	if err != nil {
		return false, err
	}
	return action == idempotency.StrandedDead, nil
}
