package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
)

// committer group-commits attempt outcomes (design rule 15): outcomes that arrive while a
// commit is in flight are written together by the next one, in one statement and one
// transaction, so the ledger's commit rate no longer caps throughput at the disk's fsync rate.
// A lone outcome is committed at once (no added delay); under load batches grow by themselves,
// up to maxBatch. Each caller waits for its own answer and only then acks: commit before ack
// holds per job.
//
// A row that Postgres refuses never fails its neighbours (design rule 28): a batch refused for
// anything but a transient failure (its data, above all) is split until the refused row is
// alone, and that row is replaced by a substitute that can be stored (the job dead with reason
// unstorable_result). Transient failures (a lost connection, a timeout, a deadlock the ledger
// could not retry away) are answered to every caller of the batch, who retry (design rule 30).
// After close, callers commit on their own (design rule 33).
type committer struct {
	ledger interface {
		Finish(ctx context.Context, outs []idempotency.Outcome) ([]bool, error)
	}
	metrics  *metrics.Metrics
	maxBatch int

	reqs chan commitReq
	stop chan struct{}
	done chan struct{}

	mu      sync.RWMutex
	closed  bool
	sending sync.WaitGroup // finish calls whose request is on its way into reqs

	// batch, outs and res are run's buffers, used again by each group (only run's goroutine
	// flushes): a group's requests and outcomes are garbage once it is answered.
	batch []commitReq
	outs  []idempotency.Outcome
	res   []commitRes
}

// answerChans holds the channels that answer commits, each used again once its answer was
// read.
var answerChans = sync.Pool{New: func() any { return make(chan commitRes, 1) }}

type commitReq struct {
	out idempotency.Outcome
	// ack, when set, acknowledges the job's message. The committer calls it once out is
	// applied as it was given (not a substitute), before answering anyone: the acks of a
	// group go out together, in a few writes to NATS, instead of one by one from each job's
	// goroutine as it wakes (design rule 15).
	ack func() error
	res chan commitRes
}

// commitRes answers one commit.
type commitRes struct {
	// applied is false when the fence no longer held: another owner finishes the job.
	applied bool
	err     error
	// stored is what was written: the outcome, or its substitute when the outcome itself
	// could not be stored (substituted).
	stored      idempotency.Outcome
	substituted bool
	// acked is set when the committer called the request's ack (ackErr is its answer).
	acked  bool
	ackErr error
}

// commitTimeout bounds one group commit.
const commitTimeout = 15 * time.Second

func newCommitter(l interface {
	Finish(ctx context.Context, outs []idempotency.Outcome) ([]bool, error)
}, m *metrics.Metrics, maxBatch int) *committer {
	return &committer{
		ledger: l, metrics: m, maxBatch: maxBatch,
		reqs: make(chan commitReq, maxBatch), stop: make(chan struct{}), done: make(chan struct{}),
		batch: make([]commitReq, 0, maxBatch), outs: make([]idempotency.Outcome, 0, maxBatch),
		res: make([]commitRes, 0, maxBatch),
	}
}

// run commits batches until close is called and everything sent before it is committed.
func (c *committer) run() {
	defer close(c.done)
	for {
		var first commitReq
		select {
		case first = <-c.reqs:
		case <-c.stop:
			// Drain what is queued in batches, as usual: a shutdown during an outage must not
			// cost a statement (and its timeout) per outcome.
			for {
				batch := c.take(c.batch[:0])
				if len(batch) == 0 {
					return
				}
				c.commitGroup(batch)
			}
		}
		c.commitGroup(c.take(append(c.batch[:0], first)))
	}
}

// commitGroup flushes batch, then keeps its array for the next group with nothing of this one
// reachable from it.
func (c *committer) commitGroup(batch []commitReq) {
	c.flush(batch)
	clear(batch)
	c.batch = batch[:0]
}

// take adds to batch what is queued, up to maxBatch, without waiting.
func (c *committer) take(batch []commitReq) []commitReq {
	for len(batch) < c.maxBatch {
		select {
		case r := <-c.reqs:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

func (c *committer) flush(batch []commitReq) {
	outs := c.outs[:0]
	for _, r := range batch {
		outs = append(outs, r.out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	answers := c.write(ctx, c.res[:0], outs)
	for i := range answers {
		if r := &answers[i]; r.err == nil && r.applied && !r.substituted && batch[i].ack != nil {
			r.acked, r.ackErr = true, batch[i].ack()
		}
	}
	for i, res := range answers {
		batch[i].res <- res
	}
	clear(outs) // nothing of an answered group stays reachable from the buffers
	clear(answers)
	c.outs, c.res = outs[:0], answers[:0]
}

// write commits outs and appends the answer of each to dst, in order. A batch refused for
// anything but a transient failure is split in halves, recursively; a lone refused outcome is
// replaced by its substitute.
func (c *committer) write(ctx context.Context, dst []commitRes, outs []idempotency.Outcome) []commitRes {
	start := time.Now()
	applied, err := c.ledger.Finish(ctx, outs)
	c.metrics.Ledger("finish", start)
	switch {
	case err == nil:
		for i := range outs {
			dst = append(dst, commitRes{applied: applied[i], stored: outs[i]})
		}
		return dst
	case !refused(err):
		for range outs {
			dst = append(dst, commitRes{err: err})
		}
		return dst
	case len(outs) > 1:
		half := len(outs) / 2
		return c.write(ctx, c.write(ctx, dst, outs[:half]), outs[half:])
	case !idempotency.Unstorable(err):
		// Refused alone for a reason that is not its data (a read-only session during a
		// failover, a permission being changed): tried again, never replaced.
		return append(dst, commitRes{err: err})
	}
	sub := substitute(outs[0], err)
	start = time.Now()
	applied, serr := c.ledger.Finish(ctx, []idempotency.Outcome{sub})
	c.metrics.Ledger("finish", start)
	if serr != nil {
		return append(dst, commitRes{err: fmt.Errorf("store the substitute of an unstorable outcome: %w (the outcome: %w)", serr, err)})
	}
	return append(dst, commitRes{applied: applied[0], stored: sub, substituted: true})
}

// refused reports whether Postgres answered a statement with an error that is not transient:
// it refused the statement, perhaps for one row's data, so the batch is split to find out.
// Anything else (a transient error, or a failure that is not Postgres's answer: a connection
// lost, a timeout) is retried as it is. Only a lone row refused for its data (Unstorable) is
// replaced by a substitute.
func refused(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && !idempotency.Transient(err)
}

// substitute is what is stored instead of an outcome that Postgres refused even after the
// ledger made its texts storable: the job dead with reason unstorable_result, without the
// result. The attempt's effect may have happened; the DLQ copy says so.
func substitute(out idempotency.Outcome, err error) idempotency.Outcome {
	sub := out
	sub.State, sub.Reason, sub.Result = idempotency.StateDead, executor.ReasonUnstorable, nil
	sub.RetryIn, sub.Release, sub.FallbackTo = 0, false, ""
	sub.Error = fmt.Sprintf("the attempt ended %s but its outcome could not be stored: %v", describe(out), err)
	return sub
}

func describe(out idempotency.Outcome) string {
	switch {
	case out.State == idempotency.StateSucceeded:
		return "in success (its effect may have happened)"
	case out.Release:
		return "unfinished"
	}
	return string(out.State)
}

// finish commits out with the next group and answers it; ack, when not nil, is called once out
// is applied as given (commitReq.ack). After close (a handler that returned after shutdown),
// it commits out on its own at once: a request is never queued where nobody reads it (design
// rule 33). ctx bounds only the wait to hand the request over; once handed over, the answer is
// awaited (the commit is bounded by commitTimeout).
func (c *committer) finish(ctx context.Context, out idempotency.Outcome, ack func() error) commitRes {
	c.mu.RLock()
	if c.closed {
		c.mu.RUnlock()
		return c.write(ctx, nil, []idempotency.Outcome{out})[0]
	}
	c.sending.Add(1)
	c.mu.RUnlock()
	res := answerChans.Get().(chan commitRes)
	select {
	case c.reqs <- commitReq{out: out, ack: ack, res: res}:
		c.sending.Done()
	case <-ctx.Done():
		c.sending.Done()
		answerChans.Put(res) // never handed over: nobody answers on it
		return commitRes{err: fmt.Errorf("hand the outcome to the committer: %w", context.Cause(ctx))}
	}
	r := <-res // the committer answers each request once: res is empty and unshared again
	answerChans.Put(res)
	return r
}

// close stops the committer once everything sent before it is committed, and waits for it.
// Later commits are made by their callers.
func (c *committer) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.sending.Wait()
	close(c.stop)
	<-c.done
}
