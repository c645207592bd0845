package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

const (
	// benchPoll is how often the bench looks at its progress while jobs run.
	benchPoll = 200 * time.Millisecond
	// benchQuiet is how long the handler's calls may stand still before the ledger is
	// counted anyway (waitSucceeded).
	benchQuiet = time.Second
	// benchStall fails a run in which no job succeeds for this long.
	benchStall = 30 * time.Second
	// DefaultDBConns is how many Postgres connections the workers may open together by
	// default: each gets an equal share, at most the worker's own default of 20.
	DefaultDBConns = 60
	// benchCleanup bounds the removal of the bench's streams and schema.
	benchCleanup = 30 * time.Second
)

// Options shape a run. Check them first (enqueue bench does, naming its flags).
type Options struct {
	Jobs         int // per phase
	Workers      int // in-process workers
	Concurrency  int // per worker
	PayloadBytes int // each job's payload, a JSON string, at least 2
	Kind         string
	// Rate, if not zero, publishes at this steady rate for Duration instead of in bursts.
	Rate leveetype.Rate
	// Duration is how long Rate publishes, or how long Backlog is worked.
	Duration time.Duration
	// DBConns is Postgres connections per worker; 0 shares DefaultDBConns among them.
	DBConns int
	// CPUProfile and BlockProfile, if set, are files for pprof profiles of the measured span.
	CPUProfile, BlockProfile string
	// MemProfile, if set, is a file for the pprof allocation profile (allocs) of the process,
	// written at the end of the measured span.
	MemProfile string
	// Backlog, if not zero, publishes that many jobs first, then works for Duration.
	Backlog int
	// NoE2E skips the e2e phase of a burst run.
	NoE2E bool
	// Scheduled, if not zero, stores that many jobs in the ledger due at one second (or over
	// Spread), with the workers running, and measures the dispatchers.
	Scheduled int
	Spread    time.Duration
	// Tx, with Rate, publishes each chunk with Client.PublishBatchTx in a transaction of its
	// own: the latency then runs from the transaction to the success, through the relay.
	Tx bool
}

// Conn says where the services are.
type Conn struct {
	NATSURL, DatabaseURL string
	NATSOptions          []nats.Option
}

// Run measures one run in a fresh namespace, bench_<random>, which it removes at the end,
// writing progress notes to stderr (and a failure to remove the namespace, which does not fail
// the run). The report is rounded to the digits that mean something.
func Run(ctx context.Context, conn Conn, o Options, stderr io.Writer) (rep *Report, err error) {
	b, err := openBench(ctx, conn, o, stderr)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err := b.close(); err != nil {
			b.note("remove namespace %s: %v", b.ns, err)
		}
	}()
	switch {
	case o.Backlog > 0:
		rep, err = b.runBacklog(ctx)
	case o.Scheduled > 0:
		rep, err = b.runScheduled(ctx)
	case o.Rate.IsZero():
		rep, err = b.runBurst(ctx)
	default:
		rep, err = b.runSteady(ctx, o.Rate)
	}
	if err != nil {
		return nil, err
	}
	if err := b.describe(ctx, rep); err != nil {
		return nil, err
	}
	rep.round()
	return rep, nil
}

// workerConns is how many Postgres connections each worker may open.
func (o *Options) workerConns() int {
	if o.DBConns > 0 {
		return o.DBConns
	}
	return min(20, max(2, DefaultDBConns/o.Workers))
}

// bench is one run's connections and namespace.
type bench struct {
	o        Options
	conn     Conn
	natsOpts []nats.Option
	log      *slog.Logger // the workers' logs: warnings and errors only
	stderr   io.Writer    // progress notes

	ns      string
	nc      *nats.Conn
	q       *queue.Queue
	client  *levee.Client
	pool    *pgxpool.Pool
	sql     benchSQL
	payload json.RawMessage
	// statements counts the transactions this process committed on pool, to take them out
	// of the database's commit count.
	statements int64
	// calls counts the no-op handler's calls, in every worker of the run (countingNoop).
	calls atomic.Int64
}

// openBench connects to both services, creates a fresh namespace's streams and ledger schema,
// and returns the run. Close it to remove them.
func openBench(ctx context.Context, conn Conn, o Options, stderr io.Writer) (*bench, error) {
	natsOpts := conn.NATSOptions
	logger, err := cli.NewLogger(stderr, "warn")
	if err != nil {
		return nil, err
	}
	b := &bench{
		o: o, conn: conn, natsOpts: natsOpts, log: logger, stderr: stderr,
		ns: benchNamespace(), payload: benchPayload(o.PayloadBytes),
	}
	b.nc, err = nats.Connect(conn.NATSURL, append([]nats.Option{nats.Name("levee-bench"), nats.Timeout(5 * time.Second)}, natsOpts...)...)
	if err != nil {
		return nil, cli.ConnectHint(&core.ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: %w", core.RedactURL(conn.NATSURL), err)})
	}
	if err := b.open(ctx); err != nil {
		if cerr := b.close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("remove namespace %s: %w", b.ns, cerr))
		}
		return nil, err
	}
	return b, nil
}

func (b *bench) open(ctx context.Context) error {
	var err error
	if b.q, err = queue.New(queue.Config{Conn: b.nc, Namespace: b.ns}); err != nil {
		return err
	}
	if b.client, err = levee.NewClient(ctx, levee.ClientConfig{Conn: b.nc, Namespace: b.ns}); err != nil {
		return err
	}
	pcfg, err := pgxpool.ParseConfig(b.conn.DatabaseURL)
	if err != nil {
		return cli.ConnectHint(&core.ConnectError{Service: "postgres", Err: fmt.Errorf("invalid database URL %s: %w", core.RedactURL(b.conn.DatabaseURL), err)})
	}
	pcfg.MaxConns = 2
	if b.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return cli.ConnectHint(&core.ConnectError{Service: "postgres", Err: fmt.Errorf("open Postgres at %s: %w", core.RedactURL(b.conn.DatabaseURL), err)})
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.pool.Ping(pctx); err != nil {
		b.pool.Close()
		b.pool = nil // nothing was created there
		return cli.ConnectHint(&core.ConnectError{Service: "postgres", Err: fmt.Errorf("connect to Postgres at %s: %w", core.RedactURL(b.conn.DatabaseURL), err)})
	}
	if _, err := idempotency.Migrate(ctx, b.pool, b.ns, nil); err != nil {
		return err
	}
	b.sql = newBenchSQL(b.ns)
	return b.q.EnsureStreams(ctx)
}

// close removes the namespace's streams and schema and closes the connections.
func (b *bench) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), benchCleanup)
	defer cancel()
	var errs []error
	if b.q != nil {
		errs = append(errs, b.q.DeleteStreams(ctx))
	}
	if b.pool != nil {
		errs = append(errs, idempotency.DropSchema(ctx, b.pool, b.ns))
		b.pool.Close()
	}
	if b.client != nil {
		b.client.Close()
	}
	b.nc.Close()
	return errors.Join(errs...)
}

// benchNamespace returns a fresh namespace, bench_<8 hex digits>.
func benchNamespace() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return "bench_" + hex.EncodeToString(r[:])
}

// benchPayload returns a JSON string of exactly n bytes (n >= 2).
func benchPayload(n int) json.RawMessage {
	p := bytes.Repeat([]byte{'x'}, n)
	p[0], p[n-1] = '"', '"'
	return p
}

func (b *bench) note(format string, args ...any) {
	fmt.Fprintf(b.stderr, "bench: "+format+"\n", args...)
}
