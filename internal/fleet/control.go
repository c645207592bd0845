package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/levee-dev/levee/internal/queue"
	"github.com/nats-io/nats.go/jetstream"
)

// The control bucket <NS>_CONTROL (LEVEE_CONTROL) carries operator commands to the whole
// fleet. Each worker watches it:
//
//	pause.<kind>    present while the kind is paused: workers stop pulling it (in-flight
//	                attempts finish; messages wait in the stream). Deleting it resumes.
//	breaker.<kind>  each put asks every live worker to close the kind's circuit breaker.
//
// Values are ControlEntry JSON. The bucket keeps one revision per key and never expires, so a
// pause outlives every worker: a worker that starts while its kind is paused starts paused.

// ControlEntry is the value of a control key: who gave the command, and when.
type ControlEntry struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// ControlOp is what a control event asks.
type ControlOp int

const (
	// ControlPause: stop pulling the kind.
	ControlPause ControlOp = iota + 1
	// ControlResume: pull the kind again.
	ControlResume
	// ControlResetBreaker: close the kind's breaker.
	ControlResetBreaker
)

// ControlEvent is one change of the control bucket, for a watching worker.
type ControlEvent struct {
	Op    ControlOp
	Kind  string
	Entry ControlEntry
	// Initial is true for the state found when the watch started (replayed pauses, and the
	// last breaker reset, which a starting worker has no reason to apply).
	Initial bool
}

func (s *Store) controlKV(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	return s.keyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      s.q.Names().ControlBucket(),
		Description: "Levee operator commands: pause.<kind> while paused, breaker.<kind> to reset a breaker",
		History:     1,
	}, create)
}

// keyValue returns the bucket cfg names, creating it with cfg (file storage, the streams'
// replicas) if it is missing and create is set; nil (and no error) when it is missing and
// create is not set. An existing bucket is used as it is, and of two creators the second uses
// the first's.
func (s *Store) keyValue(ctx context.Context, cfg jetstream.KeyValueConfig, create bool) (jetstream.KeyValue, error) {
	kv, err := s.js().KeyValue(ctx, cfg.Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		if err != nil {
			return nil, fmt.Errorf("look up bucket %s: %w", cfg.Bucket, queue.Translate(err))
		}
		return kv, nil
	}
	if !create {
		return nil, nil
	}
	cfg.Storage, cfg.Replicas = jetstream.FileStorage, s.q.StreamReplicas()
	kv, err = s.js().CreateKeyValue(ctx, cfg)
	if err != nil && queue.ExistsAfterRace(ctx, func() (lerr error) { kv, lerr = s.js().KeyValue(ctx, cfg.Bucket); return lerr }) {
		err = nil // lost the race to create it: the winner's bucket is the one
	}
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", cfg.Bucket, queue.Translate(err))
	}
	return kv, nil
}

// Pause asks every worker of kind to stop pulling it, until Resume.
func (s *Store) Pause(ctx context.Context, kind, by string) error {
	return s.putControl(ctx, "pause."+kind, kind, by)
}

// ResetBreaker asks every live worker of kind to close the kind's circuit breaker.
func (s *Store) ResetBreaker(ctx context.Context, kind, by string) error {
	return s.putControl(ctx, "breaker."+kind, kind, by)
}

func (s *Store) putControl(ctx context.Context, key, kind, by string) error {
	if err := queue.ValidateKind(kind); err != nil {
		return err
	}
	kv, err := s.controlKV(ctx, true)
	if err != nil {
		return err
	}
	v, err := json.Marshal(ControlEntry{By: by, At: time.Now().UTC()})
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, key, v); err != nil {
		return fmt.Errorf("put %s in bucket %s: %w", key, s.q.Names().ControlBucket(), queue.Translate(err))
	}
	return nil
}

// Resume lets the workers of kind pull it again. Resuming a kind that is not paused does
// nothing.
func (s *Store) Resume(ctx context.Context, kind string) error {
	if err := queue.ValidateKind(kind); err != nil {
		return err
	}
	kv, err := s.controlKV(ctx, false)
	if err != nil || kv == nil {
		return err
	}
	if err := kv.Delete(ctx, "pause."+kind); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete pause.%s in bucket %s: %w", kind, s.q.Names().ControlBucket(), queue.Translate(err))
	}
	return nil
}

// Paused returns the paused kinds and who paused them.
func (s *Store) Paused(ctx context.Context) (map[string]ControlEntry, error) {
	out := map[string]ControlEntry{}
	kv, err := s.controlKV(ctx, false)
	if err != nil || kv == nil {
		return out, err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list bucket %s: %w", s.q.Names().ControlBucket(), queue.Translate(err))
	}
	defer func() { _ = lister.Stop() }()
	for key := range lister.Keys() {
		kind, ok := strings.CutPrefix(key, "pause.")
		if !ok {
			continue
		}
		e, err := kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // resumed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("get %s in bucket %s: %w", key, s.q.Names().ControlBucket(), queue.Translate(err))
		}
		var ce ControlEntry
		_ = json.Unmarshal(e.Value(), &ce)
		out[kind] = ce
	}
	return out, nil
}

// ControlWatch delivers the control bucket's changes to a worker. Build one with
// Queue.WatchControl; call Stop when done.
type ControlWatch struct {
	w jetstream.KeyWatcher
}

// WatchControl starts watching the control bucket, creating it if it is missing. Events start
// with the current state (Initial true), so a worker starting while its kind is paused
// learns it before it pulls: call Next with initial true until it reports the end of the
// initial state, then with false.
func (s *Store) WatchControl(ctx context.Context) (*ControlWatch, error) {
	kv, err := s.controlKV(ctx, true)
	if err != nil {
		return nil, err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", s.q.Names().ControlBucket(), queue.Translate(err))
	}
	return &ControlWatch{w: w}, nil
}

// Next returns the next event, ok false for the marker that ends the initial state, or an
// error when ctx ends or the watch stops.
func (c *ControlWatch) Next(ctx context.Context, initial bool) (ev ControlEvent, ok bool, err error) {
	for {
		select {
		case <-ctx.Done():
			return ControlEvent{}, false, ctx.Err()
		case e, open := <-c.w.Updates():
			if !open {
				return ControlEvent{}, false, errors.New("control watch stopped")
			}
			if e == nil {
				return ControlEvent{}, false, nil // the initial state is complete
			}
			got, known := controlEvent(e)
			if !known {
				continue
			}
			got.Initial = initial
			return got, true, nil
		}
	}
}

func controlEvent(e jetstream.KeyValueEntry) (ControlEvent, bool) {
	var ev ControlEvent
	what, kind, ok := strings.Cut(e.Key(), ".")
	if !ok || queue.ValidateKind(kind) != nil {
		return ev, false
	}
	ev.Kind = kind
	deleted := e.Operation() != jetstream.KeyValuePut
	_ = json.Unmarshal(e.Value(), &ev.Entry)
	switch {
	case what == "pause" && deleted:
		ev.Op = ControlResume
	case what == "pause":
		ev.Op = ControlPause
	case what == "breaker" && !deleted:
		ev.Op = ControlResetBreaker
	default:
		return ev, false
	}
	return ev, true
}

// Stop ends the watch.
func (c *ControlWatch) Stop() { _ = c.w.Stop() }
