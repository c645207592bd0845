package worker

import (
	"context"
	"time"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
)

// committer group-commits attempt outcomes (DESIGN rule 15): outcomes that arrive while a
// commit is in flight are written together by the next one, in one statement and one
// transaction, so the ledger's commit rate no longer caps throughput at the disk's fsync rate.
// A lone outcome is committed at once (no added delay); under load batches grow by themselves,
// up to maxBatch. Each caller waits for its own result and only then acks: commit before ack
// holds per job.
type committer struct {
	ledger   *idempotency.Ledger
	metrics  *metrics.Metrics
	maxBatch int

	reqs chan commitReq
	stop chan struct{}
	done chan struct{}
}

type commitReq struct {
	out idempotency.Outcome
	res chan commitRes
}

type commitRes struct {
	applied bool
	err     error
}

// commitTimeout bounds one group commit.
const commitTimeout = 15 * time.Second

func newCommitter(l *idempotency.Ledger, m *metrics.Metrics, maxBatch int) *committer {
	return &committer{
		ledger: l, metrics: m, maxBatch: maxBatch,
		reqs: make(chan commitReq, maxBatch), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// run commits batches until close is called and everything queued is committed.
func (c *committer) run() {
	defer close(c.done)
	for {
		var first commitReq
		select {
		case first = <-c.reqs:
		case <-c.stop:
			for {
				select {
				case r := <-c.reqs:
					c.flush([]commitReq{r})
				default:
					return
				}
			}
		}
		batch := []commitReq{first}
	more:
		for len(batch) < c.maxBatch {
			select {
			case r := <-c.reqs:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.flush(batch)
	}
}

func (c *committer) flush(batch []commitReq) {
	outs := make([]idempotency.Outcome, len(batch))
	for i, r := range batch {
		outs[i] = r.out
	}
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	start := time.Now()
	applied, err := c.ledger.Finish(ctx, outs)
	c.metrics.Ledger("finish", start)
	for i, r := range batch {
		if err != nil {
			r.res <- commitRes{err: err}
			continue
		}
		r.res <- commitRes{applied: applied[i]}
	}
}

// finish commits out with the next group and reports whether its fence still held. After the
// committer has stopped (a handler that outlived the shutdown), it commits on its own.
func (c *committer) finish(ctx context.Context, out idempotency.Outcome) (bool, error) {
	res := make(chan commitRes, 1)
	select {
	case c.reqs <- commitReq{out: out, res: res}:
	case <-c.done:
		applied, err := c.ledger.Finish(ctx, []idempotency.Outcome{out})
		if err != nil {
			return false, err
		}
		return applied[0], nil
	}
	r := <-res
	return r.applied, r.err
}

// close stops the committer once everything queued is committed, and waits for it.
func (c *committer) close() {
	close(c.stop)
	<-c.done
}
