// Command riverbench measures River (github.com/riverqueue/river) on the same Postgres as
// `enqueue bench`, with the same no-op job and the same three phases, and prints the same
// figures, so that `make bench-compare` can put the two side by side.
//
// It lives in a Go module of its own so that River never enters Levee's dependencies.
//
// River runs with the settings of its own benchmark (`river bench`): batched InsertMany of 5,000
// jobs, 2,000 workers on one queue, a 2 ms fetch cooldown and a 20 ms fetch poll interval. Its
// completions are batched by River's default completer. The jobs live in a database of their
// own (levee_bench_river by default, created when missing), truncated before each run.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// Settings of River's own benchmark (cmd/river/riverbench).
const (
	insertBatch       = 5000
	defaultMaxWorkers = 2000
	fetchCooldown     = 2 * time.Millisecond
	fetchPollInterval = 20 * time.Millisecond
	poll              = 200 * time.Millisecond
	stall             = 30 * time.Second
	quiet             = time.Second
)

type options struct {
	databaseURL  string
	database     string
	jobs         int
	payloadBytes int
	maxWorkers   int
	dbConns      int
	clients      int
	noE2E        bool
	json         bool
}

// noopArgs is the job: a payload string of --payload-bytes, like enqueue bench's.
type noopArgs struct {
	Data string `json:"data"`
}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	calls.Add(1)
	return nil
}

// calls counts noopWorker's calls. waitCompleted reads it and counts the completed jobs in the
// database only when the calls say every job may be done (or stopped coming), as enqueue
// bench does: a count over the whole table every poll would add its own scans to the
// Postgres CPU measured.
var calls atomic.Int64

// counts is how many times waitCompleted counted the completed jobs: transactions of the bench's
// own, taken out of the database's commit count.
var counts int64

// result is what one run measured; its JSON keys are enqueue bench's.
type result struct {
	System            string             `json:"system"`
	Jobs              int                `json:"jobs"`
	Workers           int                `json:"workers"`
	PayloadBytes      int                `json:"payload_bytes"`
	MaxWorkers        int                `json:"max_workers"`
	PublishJobsPerSec float64            `json:"publish_jobs_per_sec"`
	WorkJobsPerSec    float64            `json:"work_jobs_per_sec"`
	E2EJobsPerSec     float64            `json:"e2e_jobs_per_sec"`
	LatencyMS         map[string]float64 `json:"latency_ms"`
	PGTxPerJob        float64            `json:"pg_tx_per_job"`
	WorkerCPUSeconds  float64            `json:"worker_cpu_seconds"`
	E2ECPUSeconds     float64            `json:"e2e_cpu_seconds"`
	WorkerPeakRSSMB   float64            `json:"worker_peak_rss_mb"`
	Cores             int                `json:"cores"`
	GoVersion         string             `json:"go_version"`
	PostgresVersion   string             `json:"postgres_version"`
	RiverVersion      string             `json:"river_version"`
}

func main() {
	var o options
	fs := flag.NewFlagSet("riverbench", flag.ContinueOnError)
	fs.StringVar(&o.databaseURL, "database-url", envOr("LEVEE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"Postgres to measure River on (env LEVEE_DATABASE_URL); the jobs go to the database --database on that server")
	fs.StringVar(&o.database, "database", "levee_bench_river", "database for River's tables, created when missing and truncated before the run")
	fs.IntVar(&o.jobs, "jobs", 20000, "jobs per phase")
	fs.IntVar(&o.payloadBytes, "payload-bytes", 64, "size of each job's payload, a JSON string")
	fs.IntVar(&o.maxWorkers, "max-workers", defaultMaxWorkers, "River workers on the queue (River's benchmark uses 2,000)")
	fs.IntVar(&o.dbConns, "db-conns", 20, "Postgres connections of the River client")
	fs.IntVar(&o.clients, "clients", 1, "River clients working the backlog, each with its own pool (enqueue bench's --workers)")
	fs.BoolVar(&o.noE2E, "no-e2e", false, "skip the e2e phase: publish and work only")
	fs.BoolVar(&o.json, "json", false, "print the results as one JSON object")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: riverbench [flags]

Measure River with a no-op job in the three phases of enqueue bench: publish (InsertMany of
--jobs jobs, no client running), work (a client burns the backlog down; first attempt to last
finalization) and e2e (with the client running, --jobs more are inserted; first insert to last
finalization, latency = finalized_at - created_at of each job).

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		os.Exit(2)
	}
	if o.jobs < 1 || o.payloadBytes < 2 || o.maxWorkers < 1 || o.dbConns < 2 || o.clients < 1 {
		fmt.Fprintln(os.Stderr, "riverbench: --jobs, --max-workers and --clients must be at least 1, --payload-bytes and --db-conns at least 2")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	res, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "riverbench:", err)
		os.Exit(1)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(res); err != nil {
			os.Exit(1)
		}
		return
	}
	printText(os.Stdout, res)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options) (*result, error) {
	dbURL, err := prepareDatabase(ctx, o.databaseURL, o.database)
	if err != nil {
		return nil, err
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse --database-url: %w", err)
	}
	cfg.MaxConns = int32(o.dbConns)
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if _, err := migrate(ctx, admin); err != nil {
		return nil, err
	}
	if _, err := admin.Exec(ctx, "TRUNCATE river_job"); err != nil {
		return nil, fmt.Errorf("truncate river_job: %w", err)
	}
	if _, err := admin.Exec(ctx, "VACUUM FULL river_job"); err != nil {
		return nil, fmt.Errorf("vacuum river_job: %w", err)
	}

	res := &result{System: "river", Jobs: o.jobs, Workers: o.clients, PayloadBytes: o.payloadBytes, MaxWorkers: o.maxWorkers,
		Cores: runtime.NumCPU(), GoVersion: runtime.Version(), RiverVersion: riverVersion()}
	if err := admin.QueryRow(ctx, "SHOW server_version").Scan(&res.PostgresVersion); err != nil {
		return nil, err
	}
	payload := strings.Repeat("x", o.payloadBytes-2) // a JSON string of payloadBytes bytes

	// publish: insert the backlog with no client running.
	inserter, err := newClient(o, cfg)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := insert(ctx, inserter.client, o.jobs, payload); err != nil {
		inserter.close()
		return nil, err
	}
	res.PublishJobsPerSec = float64(o.jobs) / time.Since(start).Seconds()
	inserter.close()

	// work: a client burns the backlog down; the pool is closed at the end so that Postgres
	// counts the sessions' transactions before they are read.
	tx0, err := xactCommit(ctx, admin)
	if err != nil {
		return nil, err
	}
	cpu0 := cpuSeconds()
	counts0 := counts
	var workers []*benchClient
	stopAll := func() {
		for _, w := range workers {
			w.stop(ctx)
		}
	}
	for range o.clients {
		worker, err := newClient(o, cfg)
		if err != nil {
			stopAll()
			return nil, err
		}
		if err := worker.client.Start(ctx); err != nil {
			worker.close()
			stopAll()
			return nil, err
		}
		workers = append(workers, worker)
	}
	if err := waitCompleted(ctx, admin, int64(o.jobs)); err != nil {
		stopAll()
		return nil, err
	}
	stopAll()
	res.WorkerCPUSeconds = cpuSeconds() - cpu0
	var workSecs float64
	if err := admin.QueryRow(ctx, `SELECT EXTRACT(EPOCH FROM max(finalized_at) - min(attempted_at))::float8
		FROM river_job WHERE state = 'completed'`).Scan(&workSecs); err != nil {
		return nil, err
	}
	res.WorkJobsPerSec = float64(o.jobs) / workSecs
	time.Sleep(600 * time.Millisecond) // let the ended sessions report their counters
	tx1, err := xactCommit(ctx, admin)
	if err != nil {
		return nil, err
	}
	// Less the bench's own reads: its counts and the two statements above.
	res.PGTxPerJob = float64(tx1-tx0-2-(counts-counts0)) / float64(o.jobs)
	if o.noE2E {
		res.WorkerPeakRSSMB = peakRSSMB()
		return res, nil
	}

	// e2e: with a client running, insert --jobs more and wait for them.
	var mark time.Time
	if err := admin.QueryRow(ctx, "SELECT now()").Scan(&mark); err != nil {
		return nil, err
	}
	cpu0 = cpuSeconds()
	e2e, err := newClient(o, cfg)
	if err != nil {
		return nil, err
	}
	defer e2e.close()
	if err := e2e.client.Start(ctx); err != nil {
		return nil, err
	}
	time.Sleep(100 * time.Millisecond) // the producers have started fetching
	if err := insert(ctx, e2e.client, o.jobs, payload); err != nil {
		return nil, err
	}
	if err := waitCompleted(ctx, admin, int64(2*o.jobs)); err != nil {
		return nil, err
	}
	var last time.Time
	lat := make([]float64, 4)
	if err := admin.QueryRow(ctx, `SELECT max(finalized_at),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.9) WITHIN GROUP (ORDER BY ms),
			percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
		FROM (SELECT finalized_at, EXTRACT(EPOCH FROM finalized_at - created_at) * 1000 AS ms
		      FROM river_job WHERE state = 'completed' AND created_at >= $1) j`, mark).
		Scan(&last, &lat[0], &lat[1], &lat[2], &lat[3]); err != nil {
		return nil, err
	}
	// created_at and finalized_at are both the database's clock; the start is this process's,
	// so take the e2e span from the first insert's created_at instead.
	var first time.Time
	if err := admin.QueryRow(ctx, `SELECT min(created_at) FROM river_job WHERE created_at >= $1`, mark).Scan(&first); err != nil {
		return nil, err
	}
	res.E2EJobsPerSec = float64(o.jobs) / last.Sub(first).Seconds()
	res.LatencyMS = map[string]float64{"p50": round1(lat[0]), "p90": round1(lat[1]), "p99": round1(lat[2]), "max": round1(lat[3])}
	e2e.stop(ctx)
	res.E2ECPUSeconds = cpuSeconds() - cpu0
	res.WorkerPeakRSSMB = peakRSSMB()
	return res, nil
}

// prepareDatabase creates the database when missing and returns the URL pointing at it.
func prepareDatabase(ctx context.Context, rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		return "", fmt.Errorf("invalid --database-url %q: give a URL such as postgres://user@host:5432/db", rawURL)
	}
	conn, err := pgx.Connect(ctx, rawURL)
	if err != nil {
		return "", fmt.Errorf("cannot reach Postgres at %s: %w", u.Host, err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return "", fmt.Errorf("create database %s: %w", name, err)
		}
	}
	u.Path = "/" + name
	return u.String(), nil
}

func migrate(ctx context.Context, pool *pgxpool.Pool) (*rivermigrate.MigrateResult, error) {
	m, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return nil, err
	}
	res, err := m.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return nil, fmt.Errorf("migrate River's schema: %w", err)
	}
	return res, nil
}

type benchClient struct {
	client *river.Client[pgx.Tx]
	pool   *pgxpool.Pool
}

func newClient(o options, cfg *pgxpool.Config) (*benchClient, error) {
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg.Copy())
	if err != nil {
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, noopWorker{})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		FetchCooldown:     fetchCooldown,
		FetchPollInterval: fetchPollInterval,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: o.maxWorkers}},
		Workers:           workers,
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	return &benchClient{client: client, pool: pool}, nil
}

func (b *benchClient) stop(ctx context.Context) {
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = b.client.Stop(stopCtx)
	b.close()
}

func (b *benchClient) close() { b.pool.Close() }

func insert(ctx context.Context, client *river.Client[pgx.Tx], n int, payload string) error {
	batch := make([]river.InsertManyParams, 0, insertBatch)
	for i := 0; i < n; i += insertBatch {
		batch = batch[:0]
		for j := i; j < min(n, i+insertBatch); j++ {
			batch = append(batch, river.InsertManyParams{Args: noopArgs{Data: payload}})
		}
		if _, err := client.InsertMany(ctx, batch); err != nil {
			return fmt.Errorf("insert jobs: %w", err)
		}
	}
	return nil
}

// waitCompleted waits until want jobs are completed, failing when none completes for stall. It
// counts the completed jobs only once the worker's calls have reached want or have not moved
// for quiet.
func waitCompleted(ctx context.Context, pool *pgxpool.Pool, want int64) error {
	var last int64
	lastChange := time.Now()
	seen, seenAt := int64(-1), time.Now()
	for {
		if c := calls.Load(); c < want && (c != seen || time.Since(seenAt) < quiet) {
			if c != seen {
				seen, seenAt, lastChange = c, time.Now(), time.Now()
			}
		} else {
			var done int64
			counts++
			if err := pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'completed'").Scan(&done); err != nil {
				return err
			}
			if done >= want {
				return nil
			}
			if done != last {
				last, lastChange = done, time.Now()
			} else if time.Since(lastChange) > stall {
				return fmt.Errorf("no job completed for %s (%d of %d done)", stall, done, want)
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(poll):
		}
	}
}

func xactCommit(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").Scan(&n)
	return n, err
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func peakRSSMB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return round1(float64(ru.Maxrss) / 1024) // kilobytes on Linux
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

func riverVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/riverqueue/river" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func printText(w io.Writer, r *result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "River %s, %d jobs a phase, %d workers, payload %d B\n", r.RiverVersion, r.Jobs, r.MaxWorkers, r.PayloadBytes)
	fmt.Fprintf(tw, "publish\t%.0f jobs/s\n", r.PublishJobsPerSec)
	fmt.Fprintf(tw, "work\t%.0f jobs/s\n", r.WorkJobsPerSec)
	fmt.Fprintf(tw, "e2e\t%.0f jobs/s\n", r.E2EJobsPerSec)
	fmt.Fprintf(tw, "latency\tp50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n",
		r.LatencyMS["p50"], r.LatencyMS["p90"], r.LatencyMS["p99"], r.LatencyMS["max"])
	fmt.Fprintf(tw, "pg tx per job\t%.3f\n", r.PGTxPerJob)
	fmt.Fprintf(tw, "cpu\twork %.2f s, e2e %.2f s\n", r.WorkerCPUSeconds, r.E2ECPUSeconds)
	fmt.Fprintf(tw, "peak rss\t%.1f MB\n", r.WorkerPeakRSSMB)
	fmt.Fprintf(tw, "machine\t%d cores, %s, PostgreSQL %s\n", r.Cores, r.GoVersion, r.PostgresVersion)
	_ = tw.Flush()
}
