package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
)

// pauseGate holds a kind's pull loop while an operator has paused the kind. Its zero value is
// open (not paused).
type pauseGate struct {
	mu      sync.Mutex
	paused  bool
	resumed chan struct{} // closed on resume; set while paused
	// parked is true while the pull loop waits at the gate: the pause has taken effect (the
	// pull in progress when it came has ended).
	parked atomic.Bool
}

// set pauses or resumes; it reports whether that changed anything.
func (g *pauseGate) set(paused bool) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.paused == paused {
		return false
	}
	g.paused = paused
	if paused {
		g.resumed = make(chan struct{})
	} else {
		close(g.resumed)
	}
	return true
}

// closed reports whether the kind is paused, and if so a channel closed on resume.
func (g *pauseGate) closed() (bool, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.paused, g.resumed
}

// waitResumed blocks while the kind is paused (or until ctx ends). It marks the kind parked
// meanwhile and announces both changes in the fleet registry at once.
func (k *kindRunner) waitResumed(ctx context.Context) {
	paused, resumed := k.pause.closed()
	if !paused {
		return
	}
	k.pause.parked.Store(true)
	k.w.pokeFleet()
	k.logger().Info("kind paused by an operator: pulling stopped")
	select {
	case <-resumed:
		k.logger().Info("kind resumed: pulling again")
	case <-ctx.Done():
	}
	k.pause.parked.Store(false)
	k.w.pokeFleet()
}

// paused reports whether the kind is paused right now.
func (k *kindRunner) paused() bool {
	p, _ := k.pause.closed()
	return p
}

// status is what the worker publishes of the kind in the fleet registry.
func (k *kindRunner) status() fleet.KindStatus {
	snap := k.pipeline.Breaker().Snapshot()
	st := fleet.KindStatus{
		Breaker:  snap.State.String(),
		InFlight: k.pipeline.InFlight(),
		Paused:   k.pause.parked.Load(),
	}
	if snap.State == executor.BreakerOpen {
		until := snap.OpenUntil.UTC()
		st.BreakerUntil = &until
	}
	st.BreakerFleet, st.BreakerCutOff, st.BreakerGen = snap.Fleet, snap.CutOff, snap.Gen
	st.BreakerCalls, st.BreakerFailures = snap.Calls, snap.Failures
	if r := k.pipeline.Limiter().Rate(); !r.IsZero() {
		st.Rate = r.String()
	}
	return st
}

// controlInitTimeout bounds the read of the control bucket's state at start.
const controlInitTimeout = 10 * time.Second

// applyInitialControl reads the control bucket's current state and applies its pauses, so a
// worker started while its kind is paused never pulls it. A breaker reset found there is old
// news for a fresh breaker and is skipped.
func (w *Worker) applyInitialControl(ctx context.Context, cw *fleet.ControlWatch) error {
	ctx, cancel := context.WithTimeout(ctx, controlInitTimeout)
	defer cancel()
	for {
		ev, ok, err := cw.Next(ctx, true)
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		w.applyControl(ev)
	}
}

// controlLoop applies operator commands until ctx ends.
func (w *Worker) controlLoop(ctx context.Context, cw *fleet.ControlWatch) {
	defer cw.Stop()
	for {
		ev, ok, err := cw.Next(ctx, false)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.log.Warn("control watch stopped; pause, resume and breaker reset are not applied until restart", "err", err)
			return
		}
		if ok {
			w.applyControl(ev)
		}
	}
}

func (w *Worker) applyControl(ev fleet.ControlEvent) {
	k := w.kindByName(ev.Kind)
	if k == nil {
		return // a kind this worker does not serve
	}
	log := k.logger().With("by", ev.Entry.By)
	switch ev.Op {
	case fleet.ControlPause:
		if k.pause.set(true) {
			log.Info("pause requested")
		}
	case fleet.ControlResume:
		if k.pause.set(false) {
			log.Info("resume requested")
		}
	case fleet.ControlResetBreaker:
		if ev.Initial || k.fleetBreaker != nil {
			return // a fleet's breaker is reset in its shared record, once for everyone
		}
		k.pipeline.Breaker().Reset()
		log.Info("circuit breaker reset by an operator")
		w.pokeFleet()
	}
}

func (w *Worker) kindByName(name string) *kindRunner {
	for _, k := range w.kinds {
		if k.kind.Name == name {
			return k
		}
	}
	return nil
}

// pokeFleet announces this worker's status at once, if it has joined the fleet.
func (w *Worker) pokeFleet() {
	if f := w.fleet.Load(); f != nil {
		f.Poke()
	}
}
