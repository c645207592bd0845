package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/leveetype"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
	"github.com/levee-dev/levee/internal/queue"
)

// Handler runs one attempt of a job and returns its result as JSON (nil for none).
type Handler func(ctx context.Context, att Attempt) ([]byte, error)

// TxHandler is a Handler that writes in tx; its writes commit in the same transaction as the
// job's success, or are rolled back with a failed or fenced-out attempt.
type TxHandler func(ctx context.Context, tx pgx.Tx, att Attempt) ([]byte, error)

// Attempt is what a handler gets: the job and which attempt this is.
type Attempt struct {
	queue.Envelope
	// Number counts attempts on the job's key, from 1.
	Number int
	// MaxAttempts is the effective budget (the job's header, else the kind's policy).
	MaxAttempts int
	// Fence identifies this attempt's claim of the key: every claim of a key has a higher
	// fence than the claims before it.
	Fence int64
}

// Kind configures one kind served by the worker.
type Kind struct {
	Name    string
	Handler Handler
	// TxHandler, if set instead of Handler, runs in a ledger transaction.
	TxHandler TxHandler
	// Policy is the kind's public policy; New fills in its defaults and checks it
	// (leveetype.Policy.Validate). Its AckWait is the lease (design rule 29): heartbeats run
	// every AckWait/3, and the consumer's AckWait is the lease Postgres keeps (ConsumerConfig).
	Policy leveetype.Policy
}

// attemptKey is the key of an attempt's *attempt in its handler's context.
type attemptKey struct{}

// CheckLease returns nil while the lease of the attempt whose context is ctx is known to hold,
// and otherwise the reason it ended (idempotency.ErrLeaseLost, the attempt's timeout, a
// shutdown). It judges the deadline at the moment of the call, so that a process woken after
// being frozen past its lease stops before its next call even if its timers have not run yet
// (design rule 29). Outside an attempt it returns ctx.Err().
func CheckLease(ctx context.Context) error {
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		if err := a.checkLease(); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// IDFrom returns the id of the worker running the attempt whose context is ctx ("" outside
// an attempt). The fault-injection build of the http kind sends it to its downstream, so that
// the chaos suite can tell which worker made a call.
func IDFrom(ctx context.Context) string {
	if a, ok := ctx.Value(attemptKey{}).(*attempt); ok {
		return a.workerID
	}
	return ""
}

// Hooks are test seams. Production code leaves them nil.
type Hooks struct {
	// SkipAck, when it returns true, drops the ack after a successful commit, as if the ack
	// were lost on the network.
	SkipAck func(env queue.Envelope) bool
}

// Config configures a Worker.
type Config struct {
	Queue  *queue.Queue        // required
	Ledger *idempotency.Ledger // required
	Kinds  []Kind              // at least one
	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
	// ID names this worker in logs and dead-letter headers. Default host-pid.
	ID string
	// ShutdownTimeout bounds how long in-flight attempts may finish after Run's context ends.
	// Default 30s.
	ShutdownTimeout time.Duration
	// FetchWait is how long one pull waits for messages; it also bounds how long the pull
	// loop takes to notice shutdown. Default 1s.
	FetchWait time.Duration
	// MaxBatch bounds the messages pulled (and claimed) together. Default 64.
	MaxBatch int
	// Retention is how long finished keys stay in the ledger (design rule 14). Default 7 days.
	Retention time.Duration
	// ReapInterval is how often finished keys past Retention are deleted. Default 1h; a
	// negative value turns reaping off.
	ReapInterval time.Duration
	// SweepEvery is how often the worker sweeps the kinds it leads in the fleet registry for
	// messages stranded past max_deliveries whose advisory was lost (design rule 6; sweep.go).
	// Default 1m; a negative value turns the sweep off.
	SweepEvery time.Duration
	// SweepAfter is how long after it was stored such a message may be swept. Default, per
	// kind, max(10m, 3 × MaxDeliver × AckWait): well above the time its deliveries can take.
	SweepAfter time.Duration
	// Metrics receives the worker's metrics; nil records none.
	Metrics *metrics.Metrics
	// Periodic are the periodic jobs this worker registers in the ledger at start (design
	// rule 45). Every worker's dispatcher enqueues the due ticks of every registered one.
	Periodic []leveetype.PeriodicJob
	Hooks    Hooks
}

// Worker runs the configured kinds until its context ends. Build one with New and call Run once.
type Worker struct {
	cfg       Config
	log       *slog.Logger
	kinds     []*kindRunner
	committer *committer
	gate      *soloGate                    // last chances run alone (solo.go)
	fleet     atomic.Pointer[fleet.Member] // set while Run serves
	plane     *fleet.Store                 // the fleet registry, control and breakers buckets
	serving   atomic.Bool                  // Run has started every loop and not returned
	// publishWarn and periodicWarn space the dispatcher's warnings of failed publishes and of
	// periodic jobs it could not tick.
	publishWarn, periodicWarn throttle
}

// New validates cfg and returns a Worker.
func New(cfg Config) (*Worker, error) {
	if cfg.Queue == nil || cfg.Ledger == nil {
		return nil, errors.New("worker: Config.Queue and Config.Ledger are required")
	}
	if len(cfg.Kinds) == 0 {
		return nil, errors.New("worker: no kinds to serve; register at least one handler")
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", cmp.Or(host, "worker"), os.Getpid())
	}
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, 30*time.Second)
	cfg.FetchWait = cmp.Or(cfg.FetchWait, time.Second)
	cfg.MaxBatch = cmp.Or(cfg.MaxBatch, 64)
	cfg.Retention = cmp.Or(cfg.Retention, 7*24*time.Hour)
	cfg.ReapInterval = cmp.Or(cfg.ReapInterval, time.Hour)
	w := &Worker{cfg: cfg, log: cfg.Logger, gate: newSoloGate(), plane: fleet.New(cfg.Queue)}
	w.committer = newCommitter(cfg.Ledger, cfg.Metrics, cfg.MaxBatch)
	seen := map[string]bool{}
	for _, k := range cfg.Kinds {
		if err := queue.ValidateKind(k.Name); err != nil {
			return nil, err
		}
		if seen[k.Name] {
			return nil, fmt.Errorf("worker: kind %q registered twice", k.Name)
		}
		seen[k.Name] = true
		if (k.Handler == nil) == (k.TxHandler == nil) {
			return nil, fmt.Errorf("worker: kind %q needs exactly one of Handler and TxHandler", k.Name)
		}
		k.Policy = k.Policy.WithDefaults()
		if err := k.Policy.Validate(k.Name); err != nil {
			return nil, fmt.Errorf("kind %q: %w", k.Name, err)
		}
		ep := executor.PolicyOf(k.Policy)
		ep.MaxAhead = maxClaimsInFlight * cfg.MaxBatch // what the pull loop can claim at once
		// Breaker changes are announced in the fleet registry at once, for operators.
		ep.Breaker.OnStateChangeFunc = func(executor.BreakerState, executor.BreakerState) { w.pokeFleet() }
		pl, err := executor.NewPipeline(ep)
		if err != nil {
			return nil, fmt.Errorf("kind %q: %w", k.Name, err)
		}
		w.kinds = append(w.kinds, newKindRunner(w, k, pl))
	}
	return w, nil
}

// Serving reports whether Run has set everything up (consumers, shared breakers, the fleet
// registry) and serves, until it returns.
func (w *Worker) Serving() bool { return w.serving.Load() }

// Run creates the consumers and serves every kind until ctx ends, then shuts down gracefully:
// it stops pulling, lets in-flight attempts finish within ShutdownTimeout, releases and naks
// what is left, and returns nil. It returns an error only if it could not start.
func (w *Worker) Run(ctx context.Context) error {
	// Streams and consumers made by others must give what Levee relies on (design rule 34).
	if err := w.checkSetup(ctx); err != nil {
		return startErr(ctx, err)
	}
	if err := w.checkPeriodic(); err != nil {
		return startErr(ctx, err)
	}
	if err := w.cfg.Ledger.RegisterPeriodic(ctx, w.cfg.Periodic, w.cfg.Queue.MaxPayload()); err != nil {
		return startErr(ctx, err)
	}
	for _, k := range w.kinds {
		p, err := w.cfg.Queue.EnsureConsumer(ctx, ConsumerConfig(k.kind))
		if err != nil {
			return startErr(ctx, err)
		}
		k.puller = p
	}

	// The fleet registry tells each kind how many workers serve it, for its rate share.
	kindNames := make([]string, len(w.kinds))
	byName := make(map[string]*kindRunner, len(w.kinds))
	for i, k := range w.kinds {
		kindNames[i] = k.kind.Name
		byName[k.kind.Name] = k
	}
	md, err := w.cfg.Queue.WatchMaxDeliveries(ctx)
	if err != nil {
		return startErr(ctx, err)
	}
	strays, err := w.cfg.Queue.OpenStrays(ctx) // messages no kind's consumer matches (design rule 35)
	if err != nil {
		return startErr(ctx, err)
	}
	// Operator commands: pauses in force are applied before anything is pulled.
	control, err := w.plane.WatchControl(ctx)
	if err != nil {
		return startErr(ctx, err)
	}
	if err := w.applyInitialControl(ctx, control); err != nil {
		control.Stop()
		return startErr(ctx, err)
	}
	// Shared breakers are read before anything is pulled: a worker joining an outage starts
	// open (design rule 37).
	if err := w.shareBreakers(ctx); err != nil {
		control.Stop()
		return startErr(ctx, err)
	}
	fleet, err := w.plane.Join(ctx, fleet.Config{WorkerID: w.cfg.ID, Kinds: kindNames,
		StatusFunc: func(kind string) fleet.KindStatus { return byName[kind].status() }})
	if err != nil {
		control.Stop()
		return startErr(ctx, err)
	}
	w.fleet.Store(fleet)
	fleet.OnChange(func(kind string, members int) {
		if k, ok := byName[kind]; ok {
			k.pipeline.Limiter().SetShare(members)
			w.log.Info("fleet changed", "kind", kind, "workers", members, "rate_share_per_s", k.pipeline.Limiter().Share())
		}
	})
	for _, k := range w.kinds {
		k.pipeline.Limiter().SetShare(fleet.Members(k.kind.Name))
	}

	// hardCtx ends attempts that are still running when the shutdown timeout expires.
	hardCtx, hardCancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer hardCancel(nil)

	// Connections and statements ready before the first pull: one per claim a kind may have in
	// flight, the committer's and the heartbeats'.
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	if err := w.cfg.Ledger.Warm(wctx, maxClaimsInFlight*len(w.kinds)+2); err != nil && ctx.Err() == nil {
		w.log.Warn("ledger warm-up failed; the first jobs may wait for connections", "err", err)
	}
	wcancel()

	go w.committer.run()
	var loops, attempts sync.WaitGroup
	for _, k := range w.kinds {
		k.attempts = &attempts
		k.hardCtx, k.runCtx = hardCtx, ctx
		loops.Go(func() { k.pullLoop(ctx) })
		loops.Go(func() { k.fallbackLoop(ctx) })
	}
	loops.Go(func() { w.maxDeliveriesLoop(ctx, md) })
	loops.Go(func() { w.sweepLoop(ctx) })
	loops.Go(func() { w.straysLoop(ctx, strays) })
	loops.Go(func() { w.sampleLoop(ctx) })
	loops.Go(func() { w.controlLoop(ctx, control) })
	dueWake := make(chan struct{}, 1)
	loops.Go(func() { w.listenDue(ctx, dueWake) })
	loops.Go(func() { w.dispatchLoop(ctx, dueWake) })
	heartCtx, heartStop := context.WithCancel(context.WithoutCancel(ctx))
	var hearts sync.WaitGroup
	for _, k := range w.kinds {
		hearts.Go(func() { k.leases.run(heartCtx) })
		k.breakerLoops(heartCtx, &hearts)
	}
	hearts.Go(func() {
		if err := fleet.Run(heartCtx); err != nil {
			w.log.Warn("fleet registry stopped", "err", err)
		}
	})
	if w.cfg.ReapInterval > 0 {
		hearts.Go(func() { w.reapLoop(heartCtx) })
	}
	hearts.Go(func() { w.plansLoop(heartCtx) })
	w.serving.Store(true)
	defer w.serving.Store(false)
	w.log.Info("worker started", "worker", w.cfg.ID, "kinds", len(w.kinds),
		"namespace", w.cfg.Queue.Names().Namespace(), "nats_server", w.cfg.Queue.ServerVersion())

	<-ctx.Done()
	loops.Wait() // no more pulls; messages fetched during shutdown were nakked
	w.log.Info("worker stopping: finishing in-flight attempts", "in_flight", w.inFlight(), "timeout", w.cfg.ShutdownTimeout)

	drained := make(chan struct{})
	go func() { attempts.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(w.cfg.ShutdownTimeout):
		w.log.Warn("shutdown timeout: cancelling attempts still running; they will be redelivered", "in_flight", w.inFlight())
		hardCancel(errShutdown)
		w.waitAfterHardCancel(drained)
	}
	w.committer.close() // everything queued is committed; a late handler commits on its own
	heartStop()
	hearts.Wait()
	for _, k := range w.kinds {
		if k.fleetBreaker != nil {
			k.fleetBreaker.Close() // changes still being proposed end with the worker
		}
	}
	w.log.Info("worker stopped")
	return nil
}

// waitAfterHardCancel waits, after the shutdown timeout cancelled what still ran, for the
// attempts to end: at least maxHandlerIgnore for handlers to return, and as long as an
// attempt whose handler returned is still committing under a lease that holds (design rule
// 30: a Postgres blip during a shutdown must not run a job again). Leases are extended
// meanwhile. Handlers that ignore their cancellation are left behind; redelivery covers them.
func (w *Worker) waitAfterHardCancel(drained <-chan struct{}) {
	ignoreUntil := time.Now().Add(maxHandlerIgnore)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the wait ends as soon as the attempts have
		select {
		case <-drained:
			cancel()
		case <-ctx.Done():
		}
	}()
	every.Do(ctx, 50*time.Millisecond, false, func(context.Context) bool {
		if time.Now().Before(ignoreUntil) {
			return true
		}
		for _, k := range w.kinds {
			if _, ok := k.leases.settlingUntil(k.leases.clock.Stamp()); ok {
				return true // still committing under a lease that holds
			}
		}
		w.log.Error("handlers ignored cancellation; exiting anyway (redelivery covers them)", "in_flight", w.inFlight())
		return false
	})
}

// startErr is Run's answer to a failure while starting: none when the context ended meanwhile
// (a stop during start is a stop, not an error).
func startErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil //nolint:nilerr // the failure is the stop itself
	}
	return err
}

// maxHandlerIgnore bounds how long shutdown waits for handlers that ignore cancellation.
const maxHandlerIgnore = 5 * time.Second

var errShutdown = errors.New("worker shutting down")

// inFlight counts the attempts running or committing their outcome.
func (w *Worker) inFlight() int {
	n := 0
	for _, k := range w.kinds {
		n += k.leases.count()
	}
	return n
}

func (w *Worker) reapLoop(ctx context.Context) {
	every.Do(ctx, w.cfg.ReapInterval, false, func(ctx context.Context) bool {
		n, err := w.cfg.Ledger.Reap(ctx, w.cfg.Retention, 10_000)
		if err != nil {
			w.log.Warn("reap finished keys", "err", err)
		} else if n > 0 {
			w.log.Info("reaped finished keys", "count", n, "retention", w.cfg.Retention)
		}
		return true
	})
}

// plansEvery is how often a worker checks whether the young ledger has grown enough to be
// analyzed (idempotency.Ledger.KeepPlansFresh).
const plansEvery = 2 * time.Second

// plansLoop keeps the ledger's statistics, and so every session's query plans, in step with a
// young ledger's growth, until the ledger is mature. It stops at the first failure (ANALYZE
// needs the table's owner): autovacuum then does the same, later.
func (w *Worker) plansLoop(ctx context.Context) {
	every.Do(ctx, plansEvery, false, func(ctx context.Context) bool {
		analyzed, mature, err := w.cfg.Ledger.KeepPlansFresh(ctx)
		if mature {
			return false
		}
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("cannot keep the ledger's statistics fresh; autovacuum will (plans may scan the keys table until it does)", "err", err)
			}
			return false
		}
		if analyzed {
			w.log.Debug("analyzed the ledger's keys table: it had grown")
		}
		return true
	})
}

// Breakers returns a snapshot of each kind's circuit breaker.
func (w *Worker) Breakers() map[string]executor.BreakerSnapshot {
	out := make(map[string]executor.BreakerSnapshot, len(w.kinds))
	for _, k := range w.kinds {
		out[k.kind.Name] = k.pipeline.Breaker().Snapshot()
	}
	return out
}
