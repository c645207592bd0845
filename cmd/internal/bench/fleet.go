package bench

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/leveetype"
)

// benchFleet is the in-process workers of one phase.
type benchFleet struct {
	workers []*levee.Worker
	cancel  context.CancelFunc
	g       *errgroup.Group
	gctx    context.Context
}

// startFleet starts the run's workers, each with its own id, NATS connection and Postgres pool,
// serving the kind with a no-op handler.
func (b *bench) startFleet(ctx context.Context) (*benchFleet, error) {
	f := &benchFleet{}
	policy := levee.Policy{Concurrency: b.o.Concurrency, FleetConcurrency: max(1000, b.o.Workers*b.o.Concurrency)}
	for i := range b.o.Workers {
		w, err := levee.NewWorker(levee.WorkerConfig{
			NATSURL: b.conn.NATSURL, NATSOptions: b.natsOpts, DatabaseURL: b.conn.DatabaseURL,
			DatabaseMaxConns: int32(b.o.workerConns()), Namespace: b.ns, Logger: b.log,
			ID: fmt.Sprintf("bench-%d", i+1), ShutdownTimeout: 10 * time.Second, SkipMigrate: true,
		})
		if err != nil {
			return nil, err
		}
		if err := w.Handle(b.o.Kind, countingNoop{&b.calls}, policy); err != nil {
			return nil, err
		}
		f.workers = append(f.workers, w)
	}
	var wctx context.Context
	wctx, f.cancel = context.WithCancel(ctx)
	f.g, f.gctx = errgroup.WithContext(wctx)
	for _, w := range f.workers {
		f.g.Go(func() error { return w.Run(f.gctx) })
	}
	return f, nil
}

// countingNoop is the bench's handler: builtin.Noop, counting its calls. waitSucceeded reads the
// count and asks the ledger only when the calls say every job may have succeeded (or stopped
// coming): a count over the whole ledger every poll would add its own table scans, growing
// with the run, to the Postgres CPU the bench measures.
type countingNoop struct{ calls *atomic.Int64 }

func (h countingNoop) Work(ctx context.Context, j *leveetype.Job) (any, error) {
	h.calls.Add(1)
	return builtin.Noop.Work(ctx, j)
}

// failed is closed when a worker returned an error (or the run's context ended).
func (f *benchFleet) failed() <-chan struct{} { return f.gctx.Done() }

// ready waits until every worker is serving.
func (f *benchFleet) ready(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, benchStall)
	defer cancel()
	stop := context.AfterFunc(f.gctx, cancel) // a worker that stops ends the wait
	defer stop()
	notReady := func() *levee.Worker {
		for _, w := range f.workers {
			if w.Health(rctx).Status == levee.Unhealthy {
				return w
			}
		}
		return nil
	}
	var waiting *levee.Worker
	every.Do(rctx, 10*time.Millisecond, true, func(context.Context) bool {
		waiting = notReady()
		return waiting != nil
	})
	switch {
	case waiting == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case f.gctx.Err() != nil:
		return fmt.Errorf("a worker stopped: %w", f.stop())
	}
	return fmt.Errorf("workers not ready after %s: %v", benchStall, waiting.Health(ctx).Checks)
}

// stop stops the workers and waits for them. It may be called more than once.
func (f *benchFleet) stop() error {
	f.cancel()
	return f.g.Wait()
}

// benchSQL holds the statements that read the ledger's tables for a whole run: counts and
// percentiles over every job are the benchmark's own questions, not part of the ledger's API.
type benchSQL struct {
	progress, window, latency string
}

func newBenchSQL(schema string) benchSQL {
	keys := pgx.Identifier{schema}.Sanitize() + ".keys"
	return benchSQL{
		progress: `
SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'dead'),
       coalesce(string_agg(DISTINCT reason, ', ') FILTER (WHERE state = 'dead'), '')
FROM ` + keys + ` WHERE kind = $1`,
		window: `SELECT min(started_at), max(finished_at) FROM ` + keys + ` WHERE kind = $1`,
		// Latency on the workers' clock: enqueued_at comes from the publisher's clock, so the
		// database's offset from it ($3, in milliseconds) is taken out.
		latency: `
SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY ms), max(ms), max(finished_at)
FROM (SELECT extract(epoch FROM finished_at - enqueued_at)::float8 * 1000 - $3 AS ms, finished_at
      FROM ` + keys + ` WHERE kind = $1 AND enqueued_at >= $2 AND state = 'succeeded') AS j`,
	}
}

type benchProgress struct {
	succeeded, dead int
	reasons         string
}

func (b *bench) progress(ctx context.Context) (benchProgress, error) {
	var p benchProgress
	b.statements++
	if err := b.pool.QueryRow(ctx, b.sql.progress, b.o.Kind).Scan(&p.succeeded, &p.dead, &p.reasons); err != nil {
		return p, fmt.Errorf("count finished jobs: %w", err)
	}
	return p, nil
}

// window returns the first claim and the last success of the kind's jobs, on the database's
// clock.
func (b *bench) window(ctx context.Context) (first, last time.Time, err error) {
	b.statements++
	if err := b.pool.QueryRow(ctx, b.sql.window, b.o.Kind).Scan(&first, &last); err != nil {
		return first, last, fmt.Errorf("read the work window: %w", err)
	}
	return first, last, nil
}

// latency returns the percentiles of finished_at - enqueued_at over the jobs enqueued since
// start, and the last of their successes on this process's clock.
func (b *bench) latency(ctx context.Context, since time.Time, offset time.Duration) (Latency, time.Time, error) {
	var (
		pct  []float64
		l    Latency
		last time.Time
	)
	b.statements++
	offsetMS := float64(offset) / float64(time.Millisecond)
	if err := b.pool.QueryRow(ctx, b.sql.latency, b.o.Kind, since, offsetMS).Scan(&pct, &l.Max, &last); err != nil {
		return l, last, fmt.Errorf("read latencies: %w", err)
	}
	if len(pct) != 3 {
		return l, last, fmt.Errorf("read latencies: got %d percentiles", len(pct))
	}
	l.P50, l.P90, l.P99 = pct[0], pct[1], pct[2]
	return l, last.Add(-offset), nil
}

// clockOffset estimates how far the database's clock is ahead of this process's, from the
// fastest of a few round trips.
func (b *bench) clockOffset(ctx context.Context) (time.Duration, error) {
	best, offset := time.Duration(math.MaxInt64), time.Duration(0)
	for range 5 {
		var db time.Time
		t0 := time.Now()
		b.statements++
		if err := b.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&db); err != nil {
			return 0, fmt.Errorf("read the database clock: %w", err)
		}
		rtt := time.Since(t0)
		if rtt < best {
			best, offset = rtt, db.Sub(t0.Add(rtt/2))
		}
	}
	return offset, nil
}

// commits returns the database's committed transactions, less those of this process.
func (b *bench) commits(ctx context.Context) (int64, error) {
	var n int64
	b.statements++
	if err := b.pool.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&n); err != nil {
		return 0, fmt.Errorf("read pg_stat_database: %w", err)
	}
	return n - b.statements, nil
}

// settledCommits reads commits until the count stops moving (for up to 2s): a session's
// counts reach pg_stat_database when it ends, or up to a second or more after its commits.
func (b *bench) settledCommits(ctx context.Context) (int64, error) {
	prev, err := b.commits(ctx)
	if err != nil {
		return 0, err
	}
	for range 20 {
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return 0, err
		}
		n, err := b.commits(ctx)
		if err != nil {
			return 0, err
		}
		if n == prev {
			break
		}
		prev = n
	}
	return prev, nil
}
