package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/fleet"

	"github.com/levee-dev/levee/internal/executor"
)

// The fleet's breakers (design rule 37): each kind whose breaker scope is fleet swaps its own
// breaker for a FleetBreaker before anything is pulled, set to the shared record as found.
// Four loops keep it current while the worker serves:
//
//	watch   the kind's key in the breakers bucket → Apply (every change, within milliseconds)
//	report  this worker's outcomes, every reportEvery, on core NATS
//	listen  the other workers' reports → RecordRemote
//	probe   a read of the key every probeEvery: rejoins a cut-off worker, cuts off one that
//	        cannot read it for LocalAfter

const (
	reportEvery = 100 * time.Millisecond
	probeEvery  = time.Second
)

// breakerSync stores a kind's shared record in the breakers bucket.
type breakerSync struct {
	b    *fleet.Breakers
	kind string
}

func (s breakerSync) Update(ctx context.Context, fn func(executor.Shared, bool) (executor.Shared, bool)) (executor.Shared, uint64, error) {
	v, rev, err := s.b.Update(ctx, s.kind, func(cur []byte, found bool) ([]byte, bool, error) {
		next, store := fn(executor.ParseShared(cur), found)
		if !store {
			return nil, false, nil
		}
		data, err := json.Marshal(next)
		return data, true, err
	})
	if err != nil {
		return executor.Shared{}, 0, err
	}
	return executor.ParseShared(v), rev, nil
}

// shareBreakers gives each fleet-scoped kind its FleetBreaker, set to the shared record.
func (w *Worker) shareBreakers(ctx context.Context) error {
	var store *fleet.Breakers
	for _, k := range w.kinds {
		pol := k.pipeline.Policy()
		if pol.Breaker.Scope != executor.ScopeFleet {
			continue
		}
		if store == nil {
			var err error
			if store, err = w.plane.Breakers(ctx, true); err != nil {
				return err
			}
		}
		fb, err := executor.NewFleetBreaker(executor.FleetBreakerConfig{
			Breaker:  pol.Breaker,
			Worker:   w.cfg.ID,
			Sync:     breakerSync{b: store, kind: k.kind.Name},
			TrialTTL: pol.Timeout + pol.OverrunGrace + ledgerTimeout,
		})
		if err != nil {
			return fmt.Errorf("kind %q: %w", k.kind.Name, err)
		}
		v, rev, found, err := store.Get(ctx, k.kind.Name)
		if err != nil {
			return err
		}
		if found {
			fb.Apply(executor.ParseShared(v), rev) // a worker that joins during an outage starts open
		}
		k.pipeline.UseBreaker(fb)
		k.fleetBreaker, k.breakers = fb, store
	}
	return nil
}

// breakerLoops keeps k's fleet breaker current until ctx ends.
func (k *kindRunner) breakerLoops(ctx context.Context, wg *sync.WaitGroup) {
	fb, name := k.fleetBreaker, k.kind.Name
	if fb == nil {
		return
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			err := k.breakers.Watch(ctx, name, func(v []byte, rev uint64) {
				fb.Apply(executor.ParseShared(v), rev)
				k.w.pokeFleet()
			})
			if err != nil {
				k.logger().Warn("breaker watch stopped; retrying (the probe keeps the breaker current meanwhile)", "err", err)
			}
			sleep(ctx, probeEvery)
		}
	})
	sub, err := k.w.plane.BreakerReports(name, func(r fleet.BreakerReport) {
		fb.RecordRemote(r.By, r.Epoch, r.Calls, r.Failures)
	})
	if err != nil {
		k.logger().Warn("cannot hear the fleet's breaker reports; counting this worker's outcomes only", "err", err)
	}
	wg.Go(func() {
		if sub != nil {
			defer func() { _ = sub.Unsubscribe() }()
		}
		every.Do(ctx, reportEvery, false, func(context.Context) bool {
			if epoch, calls, failures := fb.TakeReport(); calls > 0 {
				_ = k.w.plane.ReportBreaker(name, fleet.BreakerReport{By: fb.Worker(), Epoch: epoch, Calls: calls, Failures: failures})
			}
			return true
		})
	})
	// The probe has a loop of its own, so a slow read never delays the reports.
	cutOff := false
	wg.Go(func() {
		every.Do(ctx, probeEvery, false, func(ctx context.Context) bool {
			pctx, cancel := context.WithTimeout(ctx, probeEvery)
			v, rev, found, err := k.breakers.Get(pctx, name)
			cancel()
			if ctx.Err() != nil {
				return false
			}
			fb.Reachable(executor.ParseShared(v), rev, found, err)
			if now := fb.Snapshot().CutOff; now != cutOff {
				cutOff = now
				if now {
					k.logger().Warn("cut off from the fleet's breaker: deciding alone from this worker's outcomes until it is reachable", "err", err)
				} else {
					k.logger().Info("the fleet's breaker is reachable again")
				}
				k.w.pokeFleet()
			}
			return true
		})
	})
}
