package worker

import (
	"context"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/every"
)

// A poison message crashes the worker process that holds it, and with it every other message
// the process holds: JetStream redelivers them together and each crash spends a delivery (and,
// for those mid-attempt, an attempt) of every one. Left alone, healthy jobs pulled beside a
// poison would run out of deliveries or attempts with it.
//
// So a job's last chance is run alone: a message on its last delivery, or a job whose attempt
// budget was spent by workers lost mid-attempt, waits until its process holds no other
// message (pulls of every kind stop meanwhile), is marked in the ledger (MarkSolo), and runs.
// If it still crashes the process, it was the poison, and when its deliveries run out the
// max-deliveries advisory dead-letters it. A job that never had its turn alone is published
// again instead (idempotency.MarkDead). Waiting for the turn ends when the process holds
// nothing else, so it lasts at most as long as the longest attempt in flight.

// soloGate counts the messages this process holds and lets one job at a time run alone.
type soloGate struct {
	mu      sync.Mutex
	held    int  // messages held (pulled, not yet settled or abandoned), plus pulls under way
	queued  int  // last chances waiting for their turn
	running bool // a last chance is running
	// overrunning counts handlers still running past their timeout: their messages are no
	// longer counted in held (their leases are left to lapse), but they still run here.
	overrunning int
	changed     chan struct{}
}

func newSoloGate() *soloGate { return &soloGate{changed: make(chan struct{})} }

// signal wakes every waiter; g.mu is held.
func (g *soloGate) signal() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// waitUntil returns with g.mu held once ok() holds, or false (g.mu not held) when ctx ends.
func (g *soloGate) waitUntil(ctx context.Context, ok func() bool) bool {
	for {
		g.mu.Lock()
		if ok() {
			return true
		}
		ch := g.changed
		g.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}

// enterPull waits while a last chance waits or runs, then counts the pull about to be made as
// held (a pull under way may bring messages). The caller ends it with done(1) once the pull
// returned, after add(n) for what it brought. It returns false when ctx ends.
func (g *soloGate) enterPull(ctx context.Context) bool {
	if !g.waitUntil(ctx, func() bool { return g.queued == 0 && !g.running }) {
		return false
	}
	g.held++
	g.mu.Unlock()
	return true
}

// add counts n more messages as held.
func (g *soloGate) add(n int) {
	g.mu.Lock()
	g.held += n
	g.mu.Unlock()
}

// done counts n held messages as settled or abandoned.
func (g *soloGate) done(n int) {
	if n == 0 {
		return
	}
	g.mu.Lock()
	g.held -= n
	if g.held == 0 && g.queued > 0 {
		g.signal()
	}
	g.mu.Unlock()
}

// turn waits for the caller's turn to run alone. The caller holds one message (counted in
// held); it is left out while waiting, so that several last chances can wait at once. Once
// no other message is held and no other last chance runs, turn returns a func that ends the
// turn; the caller's message is counted as held again. alone is false when handlers past
// their timeout still run in the process (they are not waited for: they may never return).
// It returns a nil end when ctx ends (the message is still counted as held).
func (g *soloGate) turn(ctx context.Context) (end func(), alone bool) {
	g.mu.Lock()
	g.held--
	g.queued++
	if g.held == 0 {
		g.signal()
	}
	g.mu.Unlock()
	if !g.waitUntil(ctx, func() bool { return g.held == 0 && !g.running }) {
		g.mu.Lock()
		g.queued--
		g.held++
		g.signal()
		g.mu.Unlock()
		return nil, false
	}
	g.queued--
	g.running = true
	g.held++
	alone = g.overrunning == 0
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.running = false
			g.signal()
			g.mu.Unlock()
		})
	}, alone
}

// soloTurn is the last chance an attempt runs in: released closes when the attempt no longer
// holds its message (it ended, or it runs past its timeout and is left to lapse). mark, when
// set (the job runs alone), records the last chance in the ledger once the key is claimed.
type soloTurn struct {
	released chan struct{}
	mark     func(ctx context.Context) error
	// marked is set once the mark is written.
	marked bool
}

// lastDelivery reports whether d is on the last delivery the kind's consumer allows
// (max_deliveries exceeds max_attempts, so it is at least 2: a first delivery is never the
// last).
func (k *kindRunner) lastDelivery(j *job) bool {
	return j.delivered >= uint64(k.kind.Policy.MaxDeliveries)
}

// runAlone gives j its last chance: it waits for its turn (telling the server the message is
// in progress meanwhile), marks the job in the ledger, claims it and runs its attempt alone,
// and ends the turn when the attempt no longer holds the message. j is counted as held by the
// caller and holds a bulkhead reservation; runAlone settles both. ctx is the pull loop's: when
// it ends before the turn comes, the message is handed back.
func (k *kindRunner) runAlone(ctx context.Context, j *job) {
	gate := k.w.gate
	log := k.log.With("job_id", j.env.ID, "key", j.env.Key, "delivery", j.delivered)
	log.Info("last chance: waiting to run this job alone in the worker", "held", gate.heldNow())
	beatCtx, stopBeat := context.WithCancel(context.WithoutCancel(ctx))
	go every.Do(beatCtx, k.kind.Policy.AckWait/3, false, func(context.Context) bool {
		_ = j.msg.InProgress()
		return true
	})
	end, alone := gate.turn(ctx)
	stopBeat()
	handBack := func(delay time.Duration) {
		_ = j.msg.Nak(delay) // its deliveries run out: MarkDead publishes it again (no mark)
		k.pipeline.Release(1, j.trial)
		gate.done(1)
	}
	if end == nil {
		handBack(0) // shutting down
		return
	}
	defer end()
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	turn := &soloTurn{released: make(chan struct{})}
	if alone {
		// Marked once its claim succeeded, before it runs: a job whose claim finds its key
		// busy (a dead worker's lease not yet lapsed) ran nothing and stays unmarked, so its
		// deliveries running out publish it again rather than dead-lettering it.
		turn.mark = func(ctx context.Context) error {
			if err := k.ledger.MarkSolo(ctx, j.env.ID, j.env.Kind, j.seq); err != nil {
				log.Warn("last chance: ledger unavailable; handing the job back", "err", err)
				return err
			}
			turn.marked = true
			log.Info("last chance: running the job alone in the worker")
			return nil
		}
	} else {
		// A handler past its timeout still runs here and may crash the process: this run
		// proves nothing, so it is not marked (if the process dies, the job is published
		// again rather than dead-lettered).
		log.Warn("last chance: handlers past their timeout still run in this worker; running the job without marking it alone")
	}
	k.metrics.LastChance(k.kind.Name)
	if started, _ := k.claimAndDispatch(lctx, []*job{j}, false, turn); started == 0 {
		return // settled without an attempt (a duplicate, a busy key, a failed claim or mark)
	}
	<-turn.released
}

// unmark takes back a last chance's mark after its attempt lost its lease: the worker lost
// Postgres (or froze) and cancelled it, which says nothing about the job, so its deliveries
// running out must not condemn it as a poison. Postgres was unreachable a moment ago, so it is
// tried until the lease would have lapsed; if it never lands, the job is dead-lettered as a
// poison after all (a limitation docs/reliability.md names).
func (k *kindRunner) unmark(j *job) {
	k.attempts.Go(func() {
		giveUpAt := time.Now().Add(k.leases.times.stored())
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, time.Second) {
			ctx, cancel := context.WithTimeout(context.Background(), k.leases.times.try())
			err := k.ledger.UnmarkSolo(ctx, j.env.ID, j.seq)
			cancel()
			if err == nil {
				k.log.Info("last chance: taken back after the lease was lost", "job_id", j.env.ID)
				return
			}
			if time.Now().After(giveUpAt) {
				k.log.Warn("last chance: could not take back its mark; its deliveries running out will dead-letter it", "job_id", j.env.ID, "err", err)
				return
			}
			time.Sleep(wait)
		}
	})
}

// addOverrun counts a handler that runs past its timeout (+1), or that returned after (-1).
func (g *soloGate) addOverrun(n int) {
	g.mu.Lock()
	g.overrunning += n
	g.mu.Unlock()
}

// heldNow is the number of messages held, for logs.
func (g *soloGate) heldNow() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}
