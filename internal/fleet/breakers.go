package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The breakers bucket <NS>_BREAKERS (LEVEE_BREAKERS) holds one key per kind whose breaker is
// shared by the fleet: the kind's breaker record (JSON), changed only by compare-and-set, so
// that of two workers deciding at once one wins and the other sees what it decided. Workers
// watch their kinds' keys. The outcomes behind the decisions travel on core NATS, not in the
// bucket: each worker publishes its outcomes of the last 100 ms on <ns>.breaker.<kind>
// (BreakerReport), and every worker of the kind adds the others' to its window (design rule 37).

// Breakers returns the breakers bucket, creating it if create is set; nil (and no error)
// when it does not exist and create is not set.
func (s *Store) Breakers(ctx context.Context, create bool) (*Breakers, error) {
	bucket := s.q.Names().BreakersBucket()
	kv, err := s.keyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      bucket,
		Description: "Levee circuit breakers shared by the fleet: <kind> holds the kind's breaker record",
		History:     1,
	}, create)
	if err != nil || kv == nil {
		return nil, err
	}
	return &Breakers{kv: kv, bucket: bucket}, nil
}

// Breakers is the breakers bucket.
type Breakers struct {
	kv     jetstream.KeyValue
	bucket string
}

// Get returns kind's record and its revision; found is false when there is none.
func (b *Breakers) Get(ctx context.Context, kind string) (value []byte, rev uint64, found bool, err error) {
	e, err := b.kv.Get(ctx, kind)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("get %s in bucket %s: %w", kind, b.bucket, queue.Translate(err))
	}
	return e.Value(), e.Revision(), true, nil
}

// All returns every kind's record.
func (b *Breakers) All(ctx context.Context) (map[string][]byte, error) {
	out := map[string][]byte{}
	lister, err := b.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", b.bucket, queue.Translate(err))
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		v, _, found, err := b.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if found {
			out[key] = v
		}
	}
	return out, nil
}

// Update reads kind's record, passes it to fn and stores what fn returns (when it says to) if
// the record has not changed meanwhile; on a change it reads again and calls fn again. It
// returns the record stored, or the current one when fn stored nothing, with its revision.
func (b *Breakers) Update(ctx context.Context, kind string, fn func(cur []byte, found bool) ([]byte, bool, error)) ([]byte, uint64, error) {
	for {
		cur, rev, found, err := b.Get(ctx, kind)
		if err != nil {
			return nil, 0, err
		}
		next, store, err := fn(cur, found)
		if err != nil || !store {
			return cur, rev, err
		}
		if found {
			rev, err = b.kv.Update(ctx, kind, next, rev)
		} else {
			rev, err = b.kv.Create(ctx, kind, next)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // changed meanwhile: decide again on what is there now
		}
		if err != nil {
			return nil, 0, fmt.Errorf("update %s in bucket %s: %w", kind, b.bucket, queue.Translate(err))
		}
		return next, rev, nil
	}
}

// Watch calls fn with kind's record each time it changes, starting with the current one (a
// deletion: nil), until ctx ends or the watch fails (its error is returned; nil when ctx
// ended).
func (b *Breakers) Watch(ctx context.Context, kind string, fn func(value []byte, rev uint64)) error {
	w, err := b.kv.Watch(ctx, kind)
	if err != nil {
		return fmt.Errorf("watch %s in bucket %s: %w", kind, b.bucket, queue.Translate(err))
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch %s in bucket %s stopped", kind, b.bucket)
			}
			switch {
			case e == nil: // the current values have all been delivered
			case e.Operation() == jetstream.KeyValuePut:
				fn(e.Value(), e.Revision())
			default: // deleted or purged
				fn(nil, e.Revision())
			}
		}
	}
}

// BreakerReport is one worker's breaker outcomes for a kind since its last report.
type BreakerReport struct {
	By       string `json:"by"`
	Epoch    uint64 `json:"epoch"` // the breaker record's Epoch the outcomes belong to
	Calls    int    `json:"calls"`
	Failures int    `json:"failures"`
}

// ReportBreaker publishes r for kind's workers (core NATS: at most once, no reply).
func (s *Store) ReportBreaker(kind string, r BreakerReport) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.q.Conn().Publish(s.q.Names().BreakerSubject(kind), data)
}

// BreakerReports calls fn with each report published for kind, from its own goroutine, until
// the returned subscription is unsubscribed. Malformed reports are dropped.
func (s *Store) BreakerReports(kind string, fn func(BreakerReport)) (*nats.Subscription, error) {
	sub, err := s.q.Conn().Subscribe(s.q.Names().BreakerSubject(kind), func(m *nats.Msg) {
		var r BreakerReport
		if json.Unmarshal(m.Data, &r) == nil && r.Calls > 0 && r.Failures >= 0 {
			fn(r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", s.q.Names().BreakerSubject(kind), err)
	}
	return sub, nil
}
