package dashboard

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/levee-dev/levee"
)

// deadLine is one dead job as the DLQ page lists it: no payload or headers, to keep the cache
// small.
type deadLine struct {
	ID, Kind, Key, Reason, LastError string
	Attempts                         int
	FailedAt                         time.Time
	Sequence                         uint64
}

// deadScan is the result of one scan of the DLQ for a filter.
type deadScan struct {
	Lines []deadLine
	At    time.Time
}

// scanTimeout bounds one scan of the DLQ.
const scanTimeout = time.Minute

// scanCache shares DLQ scans: a filter's scan is reused for maxAge, and concurrent requests
// for the same filter wait for the one scan in progress.
type scanCache struct {
	svc    Service
	maxAge time.Duration
	group  singleflight.Group
	// one lets one scan run at a time, whatever the filters asked for: each reads the
	// whole DLQ.
	one chan struct{}

	mu      sync.Mutex
	results map[string]*deadScan // by dlqForm.Query()
}

func newScanCache(svc Service, maxAge time.Duration) *scanCache {
	return &scanCache{svc: svc, maxAge: maxAge, results: map[string]*deadScan{}, one: make(chan struct{}, 1)}
}

// scan returns the dead jobs matching f, oldest first, from a scan at most maxAge old
// (fresh forces a new scan, as a bulk action's count needs).
func (c *scanCache) scan(ctx context.Context, f dlqForm, fresh bool) (*deadScan, error) {
	key := f.Query()
	now := time.Now()
	if !fresh {
		c.mu.Lock()
		s, ok := c.results[key]
		c.mu.Unlock()
		if ok && now.Sub(s.At) < c.maxAge {
			return s, nil
		}
	}
	filter, err := f.filter(now)
	if err != nil {
		return nil, err
	}
	v, err, _ := c.group.Do(key, func() (any, error) {
		// One scan serves every waiting request: it must not end with the first one's.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), scanTimeout)
		defer cancel()
		select {
		case c.one <- struct{}{}:
			defer func() { <-c.one }()
		case <-sctx.Done():
			return nil, fmt.Errorf("scan the dead-letter queue: %w", sctx.Err())
		}
		s := &deadScan{At: time.Now()}
		for dj, err := range c.svc.DeadJobs(sctx, filter) {
			if err != nil {
				return nil, err
			}
			s.Lines = append(s.Lines, lineOf(dj))
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		for k, old := range c.results { // drop what has expired, so filters do not pile up
			if s.At.Sub(old.At) >= c.maxAge {
				delete(c.results, k)
			}
		}
		c.results[key] = s
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*deadScan), nil
}

// forget drops every cached scan: after an action changed the DLQ.
func (c *scanCache) forget() {
	c.mu.Lock()
	clear(c.results)
	c.mu.Unlock()
}

func lineOf(dj levee.DeadJob) deadLine {
	return deadLine{
		ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, LastError: dj.LastError,
		Attempts: dj.Attempts, FailedAt: dj.FailedAt, Sequence: dj.Sequence,
	}
}
