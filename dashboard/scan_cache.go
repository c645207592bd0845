package dashboard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
	"golang.org/x/sync/singleflight"
)

// deadLine is one dead job as the DLQ page lists it: no payload or headers, to keep the cache
// small.
type deadLine struct {
	ID, Kind, Key, Reason, LastError string
	Attempts                         int
	FailedAt                         time.Time
	Sequence                         uint64
}

// deadScan is one scan of the whole DLQ (headers only), or its lines that match a filter.
type deadScan struct {
	Lines []deadLine
	At    time.Time
}

// scanTimeout bounds one scan of the DLQ.
const scanTimeout = time.Minute

// scanCache shares DLQ scans: one scan of the whole dead-letter queue, headers only, serves
// every filter for maxAge (filters are applied in memory, so a viewer trying filter after
// filter costs no more than one look), and concurrent requests wait for the scan in progress.
type scanCache struct {
	svc    Service
	maxAge time.Duration
	group  singleflight.Group

	mu   sync.Mutex
	last *deadScan // the whole DLQ, oldest first
}

func newScanCache(svc Service, maxAge time.Duration) *scanCache {
	return &scanCache{svc: svc, maxAge: maxAge}
}

// scan returns the dead jobs matching f, oldest first, from a scan at most maxAge old
// (fresh forces a new scan, as a bulk action's count needs).
func (c *scanCache) scan(ctx context.Context, f dlqForm, fresh bool) (*deadScan, error) {
	now := time.Now()
	filter, err := f.filter(now)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	all := c.last
	c.mu.Unlock()
	if fresh || all == nil || now.Sub(all.At) >= c.maxAge {
		v, err, _ := c.group.Do("all", func() (any, error) {
			// One scan serves every waiting request: it must not end with the first one's.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scanTimeout)
			defer cancel()
			s := &deadScan{At: time.Now()}
			for dj, err := range c.svc.DeadJobList(sctx, admin.DeadJobListParams{WithoutPayloads: true}) {
				if err != nil {
					return nil, fmt.Errorf("scan the dead-letter queue: %w", err)
				}
				s.Lines = append(s.Lines, lineOf(dj))
			}
			c.mu.Lock()
			c.last = s
			c.mu.Unlock()
			return s, nil
		})
		if err != nil {
			return nil, err
		}
		all = v.(*deadScan)
	}
	// The DLQ's own filter, applied to the cached lines.
	df := queue.DeadFilter{Kind: filter.Kind, Reason: filter.Reason, FailedAfter: filter.Since, FailedBefore: filter.Before}
	out := &deadScan{At: all.At}
	for _, l := range all.Lines {
		if df.Match(&queue.DeadLetter{DeadJob: leveetype.DeadJob{Kind: l.Kind, Reason: l.Reason, FailedAt: l.FailedAt}}) {
			out.Lines = append(out.Lines, l)
		}
	}
	return out, nil
}

// forget drops the cached scan: after an action changed the DLQ.
func (c *scanCache) forget() {
	c.mu.Lock()
	c.last = nil
	c.mu.Unlock()
}

func lineOf(dj leveetype.DeadJob) deadLine {
	return deadLine{
		ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, LastError: dj.LastError,
		Attempts: dj.Attempts, FailedAt: dj.FailedAt, Sequence: dj.Sequence,
	}
}
