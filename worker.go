package levee

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/metrics"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
	"github.com/levee-dev/levee/leveetype"
)

// WorkerConfig configures a Worker. Every field has a default.
type WorkerConfig struct {
	// NATSURL is used when Conn is nil. Default DefaultNATSURL.
	NATSURL string
	// NATSOptions are extra options (credentials, TLS) for connections made from NATSURL.
	NATSOptions []nats.Option
	// Conn is an existing NATS connection; the Worker does not close it.
	Conn *nats.Conn
	// DatabaseURL is used when Pool is nil. Default DefaultDatabaseURL.
	DatabaseURL string
	// Pool is an existing Postgres pool; the Worker does not close it.
	Pool *pgxpool.Pool
	// DatabaseMaxConns bounds the pool the Worker opens from DatabaseURL. Default 20.
	DatabaseMaxConns int32
	// Namespace prefixes streams, consumers and subjects, and names the Postgres schema.
	// Default "levee".
	Namespace string
	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
	// ID names the worker in logs and dead-letter headers. Default host-pid.
	ID string
	// ShutdownTimeout bounds how long in-flight jobs may finish after Run's context ends;
	// what is left is released and redelivered. Default 30s.
	ShutdownTimeout time.Duration
	// MaxPayload bounds payloads; a larger message is dead-lettered as malformed. Default 1 MiB.
	MaxPayload int
	// Retention is how long finished idempotency keys are kept. Default 7 days.
	Retention time.Duration
	// SkipMigrate leaves the schema alone at start (run `worker migrate` separately).
	SkipMigrate bool
	// StreamReplicas is the replication factor of the streams the worker creates when they
	// do not exist yet (3 on a NATS cluster). Existing streams are never changed. Default 1.
	StreamReplicas int

	// skipAck is a test seam: drop the ack after commit, as a lost ack would.
	skipAck func(id string) bool
	// sweepEvery and sweepAfter are test seams: worker.Config's SweepEvery and SweepAfter
	// (the sweep of stranded messages, design rule 6).
	sweepEvery, sweepAfter time.Duration
}

// Worker runs handlers for the kinds registered with Handle. Build one with NewWorker,
// register handlers, then call Run once.
type Worker struct {
	cfg      WorkerConfig
	metrics  *metrics.Metrics
	mu       sync.Mutex
	kinds    []worker.Kind
	periodic []PeriodicJob
	ran      bool

	liveMu sync.Mutex
	live   *live // set while Run serves, for the health checks
}

// NewWorker returns a Worker for cfg. It connects to nothing until Run.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	cfg.Namespace = cmp.Or(cfg.Namespace, DefaultNamespace)
	if err := queue.ValidateNamespace(cfg.Namespace); err != nil {
		return nil, err
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	return &Worker{cfg: cfg, metrics: metrics.New()}, nil
}

// Handle registers handler for kind with policy p (zero fields take defaults). It returns an
// error for an invalid kind or policy, or a kind registered twice.
func (w *Worker) Handle(kind string, h Handler, p Policy) error {
	if h == nil {
		return fmt.Errorf("kind %q: handler is nil", kind)
	}
	return w.register(worker.Kind{Name: kind, Handler: adapt(h.Work)}, p)
}

// HandleTx registers a handler whose writes share the transaction that records the job's
// success; see TxHandler.
func (w *Worker) HandleTx(kind string, h TxHandler, p Policy) error {
	if h == nil {
		return fmt.Errorf("kind %q: handler is nil", kind)
	}
	return w.register(worker.Kind{Name: kind, TxHandler: func(ctx context.Context, tx pgx.Tx, att worker.Attempt) ([]byte, error) {
		return adapt(func(ctx context.Context, job *Job) (any, error) { return h.WorkTx(ctx, tx, job) })(ctx, att)
	}}, p)
}

func (w *Worker) register(k worker.Kind, p Policy) error {
	if err := queue.ValidateKind(k.Name); err != nil {
		return err
	}
	// The one check of a policy, as the YAML config makes it (design rule 39); the engine
	// makes it again when it starts, on the same function.
	if err := p.WithDefaults().Validate(k.Name); err != nil {
		return fmt.Errorf("kind %q: %w", k.Name, err)
	}
	k.Policy = p
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, have := range w.kinds {
		if have.Name == k.Name {
			return fmt.Errorf("kind %q is already registered", k.Name)
		}
	}
	w.kinds = append(w.kinds, k)
	return nil
}

// PeriodicJob is a job published at every tick of a schedule; see leveetype.PeriodicJob.
type PeriodicJob = leveetype.PeriodicJob

// CatchUp says which missed ticks of a PeriodicJob run once the fleet is back.
type CatchUp = leveetype.CatchUp

// The catch_up policies of a PeriodicJob: which ticks run after the fleet missed some.
const (
	CatchUpSkip   = leveetype.CatchUpSkip
	CatchUpLatest = leveetype.CatchUpLatest
	CatchUpAll    = leveetype.CatchUpAll
)

// Periodic registers a periodic job: at Run, the worker writes it to the ledger, and from then
// on every worker's dispatcher enqueues each of its ticks once across the fleet, with the
// idempotency key periodic:<name>:<tick> (design rule 45). The kind need not be one this
// worker handles. A changed schedule starts again from now; a name this worker does not
// register is left to the workers that do (never deleted). It returns an error for an invalid
// job or a name registered twice.
func (w *Worker) Periodic(p PeriodicJob) error {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, have := range w.periodic {
		if have.Name == p.Name {
			return fmt.Errorf("periodic job %q is already registered", p.Name)
		}
	}
	w.periodic = append(w.periodic, p)
	return nil
}

// adapt turns a public Handler into the engine's handler.
func adapt(work func(context.Context, *Job) (any, error)) worker.Handler {
	return func(ctx context.Context, att worker.Attempt) ([]byte, error) {
		job := &Job{
			ID: att.ID, Kind: att.Kind, Key: att.Key, Payload: att.Payload,
			Attempt: att.Number, MaxAttempts: att.MaxAttempts, EnqueuedAt: att.EnqueuedAt, Fence: att.Fence,
		}
		res, err := work(ctx, job)
		if err != nil {
			return nil, err
		}
		if res == nil {
			return nil, nil
		}
		b, err := json.Marshal(res)
		if err != nil {
			return nil, Permanent(fmt.Errorf("marshal result: %w", err))
		}
		return b, nil
	}
}

// Run connects (if given URLs), applies migrations under an advisory lock, creates the streams
// and one durable consumer per kind, and serves until ctx ends. Then it drains gracefully:
// it stops pulling, lets in-flight jobs finish within ShutdownTimeout (still heartbeating),
// releases and naks what is left, and returns nil. It returns an error if it cannot start.
func (w *Worker) Run(ctx context.Context) error {
	err := w.run(ctx)
	if err != nil && ctx.Err() != nil {
		return nil //nolint:nilerr // stopped while starting: a stop, not a failure to start
	}
	return err
}

func (w *Worker) run(ctx context.Context) error {
	w.mu.Lock()
	if w.ran {
		w.mu.Unlock()
		return errors.New("levee: Worker.Run called twice")
	}
	w.ran = true
	kinds := append([]worker.Kind(nil), w.kinds...)
	periodic := append([]PeriodicJob(nil), w.periodic...)
	w.mu.Unlock()
	if len(kinds) == 0 {
		return errors.New("levee: no handlers registered; call Handle before Run")
	}

	cfg := w.cfg
	nc := cfg.Conn
	if nc == nil {
		var err error
		nc, err = core.ConnectNATS(cmp.Or(cfg.NATSURL, DefaultNATSURL), "levee-worker", cfg.NATSOptions)
		if err != nil {
			return err
		}
		defer nc.Close()
	}
	pool := cfg.Pool
	if pool == nil {
		var err error
		pool, err = core.OpenPool(ctx, cmp.Or(cfg.DatabaseURL, DefaultDatabaseURL), cmp.Or(cfg.DatabaseMaxConns, 20))
		if err != nil {
			return err
		}
		defer pool.Close()
	}
	if cfg.SkipMigrate {
		if err := idempotency.CheckEncoding(ctx, pool); err != nil {
			return err
		}
	} else {
		applied, err := idempotency.Migrate(ctx, pool, cfg.Namespace, nil)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			cfg.Logger.Info("applied migrations", "schema", cfg.Namespace, "versions", applied)
		}
	}
	q, err := queue.New(queue.Config{Conn: nc, Namespace: cfg.Namespace, MaxPayload: cfg.MaxPayload,
		Stream: queue.StreamConfig{Replicas: cfg.StreamReplicas}})
	if err != nil {
		return err
	}
	if err := q.CheckJetStream(ctx); err != nil {
		return err
	}
	if err := q.EnsureStreams(ctx); err != nil {
		return err
	}
	ledger, err := idempotency.New(idempotency.Config{Pool: pool, Schema: cfg.Namespace})
	if err != nil {
		return err
	}
	if err := ledger.Ping(ctx); err != nil {
		return fmt.Errorf("%w (run `worker migrate`, or start without SkipMigrate)", err)
	}
	wcfg := worker.Config{
		Queue: q, Ledger: ledger, Kinds: kinds, Logger: cfg.Logger, ID: cfg.ID,
		ShutdownTimeout: cfg.ShutdownTimeout, Retention: cfg.Retention, Metrics: w.metrics,
		SweepEvery: cfg.sweepEvery, SweepAfter: cfg.sweepAfter, Periodic: periodic,
	}
	if cfg.skipAck != nil {
		wcfg.Hooks.SkipAck = func(env queue.Envelope) bool { return cfg.skipAck(env.ID) }
	}
	eng, err := worker.New(wcfg)
	if err != nil {
		return err
	}
	w.setLive(&live{q: q, pool: pool, eng: eng})
	defer w.setLive(nil)
	return eng.Run(ctx)
}

// Migrate applies Levee's migrations to the namespace's schema in the database at dbURL and
// returns the versions it applied (none when up to date). `worker migrate` calls it.
func Migrate(ctx context.Context, dbURL, namespace string, logger *slog.Logger) ([]int64, error) {
	namespace = cmp.Or(namespace, DefaultNamespace)
	if err := queue.ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	pool, err := core.OpenPool(ctx, cmp.Or(dbURL, DefaultDatabaseURL), 2)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	return idempotency.Migrate(ctx, pool, namespace, logger)
}
