package worker

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/levee-dev/levee/internal/metrics"
	"github.com/levee-dev/levee/internal/queue"
)

// The DLQ depth metric, levee_dlq_depth{reason}, without reading the whole DLQ.
//
// The DLQ keeps every dead job until an operator replays or purges it, so it only grows
// between such actions, and a count that read every entry's headers at each sample would cost
// more with every dead job. So one worker of the fleet counts it (the leader: the live worker
// with the smallest id in the fleet registry; the others export no series), and it counts
// incrementally: it remembers the last DLQ sequence it read and the counts by reason, and at
// each sample reads only the entries stored since (headers only). Entries are only ever
// added at the end, and removed by a replay, a purge or an operator's delete; the stream's
// message count tells which happened: when the count is what was counted plus what was just
// read, nothing was removed; otherwise (or when the stream was recreated) it counts every
// entry again, once.

// dlqSource is what the DLQ counter reads: the Queue, or a fake in tests.
type dlqSource interface {
	// DLQState returns the DLQ's message count, its last sequence and when it was created.
	DLQState(ctx context.Context) (msgs, lastSeq uint64, created time.Time, err error)
	EachDeadLetter(ctx context.Context, f queue.DeadFilter, fn func(queue.DeadLetter) bool) error
}

// dlqCounter keeps the DLQ's counts by reason up to date (see above). It is not safe for
// concurrent use.
type dlqCounter struct {
	src      dlqSource
	valid    bool      // counts hold every entry up to lastSeq
	created  time.Time // the stream counted
	lastSeq  uint64
	count    uint64
	byReason map[string]int
	rescans  int // full counts made, for tests
}

func newDLQCounter(src dlqSource) *dlqCounter {
	return &dlqCounter{src: src, byReason: map[string]int{}}
}

// errDLQChanging: entries were removed each time the DLQ was counted; the counts stay as they
// were until the next sample.
var errDLQChanging = errors.New("dead-letter entries were removed while the DLQ was counted; counting again at the next sample")

// update brings the counts up to date. On an error the counts stay as they were.
func (c *dlqCounter) update(ctx context.Context) error {
	for range 2 { // a count spoilt by a removal is made again once, at once
		msgs, last, created, err := c.src.DLQState(ctx)
		if err != nil {
			return err
		}
		if c.valid && (!created.Equal(c.created) || last < c.lastSeq || msgs < c.count) {
			c.valid = false // removed entries, or another stream
		}
		from, count, byReason := c.lastSeq, c.count, c.byReason
		if !c.valid {
			from, count, byReason = 0, 0, map[string]int{}
			c.rescans++
		} else {
			byReason = make(map[string]int, len(c.byReason))
			for r, n := range c.byReason {
				byReason[r] = n
			}
		}
		if last > from { // entries stored since: read them (a removal may hide behind them)
			err = c.src.EachDeadLetter(ctx, queue.DeadFilter{HeadersOnly: true, AfterSeq: from, UpToSeq: last},
				func(e queue.DeadLetter) bool {
					count++
					byReason[cmp.Or(e.Reason, "unknown")]++
					return true
				})
			if err != nil {
				return err
			}
		}
		if count == msgs {
			c.valid, c.created, c.lastSeq, c.count, c.byReason = true, created, last, count, byReason
			return nil
		}
		c.valid = false // entries up to lastSeq were removed: count every entry again
	}
	return errDLQChanging
}

// forget drops the counts: a worker that stops leading the fleet counts again from the start
// when it leads again.
func (c *dlqCounter) forget() {
	c.valid, c.lastSeq, c.count, c.byReason = false, 0, 0, map[string]int{}
}

// sampleDLQDepth sets levee_dlq_depth{reason} from dlq when this worker leads the fleet, and
// removes the series otherwise.
func (w *Worker) sampleDLQDepth(ctx context.Context, m *metrics.Metrics, dlq *dlqCounter, exported map[string]bool) {
	if fleet := w.fleet.Load(); fleet != nil && !fleet.Leads("") {
		for reason := range exported {
			m.DLQDepth.DeleteLabelValues(reason)
			delete(exported, reason)
		}
		dlq.forget()
		return
	}
	err := dlq.update(ctx)
	switch {
	case errors.Is(err, queue.ErrNoStream):
		dlq.forget() // no DLQ yet: nothing is dead
	case err != nil:
		if ctx.Err() == nil {
			w.log.Debug("count the DLQ for levee_dlq_depth", "err", err)
		}
		return
	}
	for reason, n := range dlq.byReason {
		m.DLQDepth.WithLabelValues(reason).Set(float64(n))
		exported[reason] = true
	}
	for reason := range exported {
		if _, ok := dlq.byReason[reason]; !ok {
			m.DLQDepth.DeleteLabelValues(reason)
			delete(exported, reason)
		}
	}
}
