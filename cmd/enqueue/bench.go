package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/cli"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

const (
	// benchPoll is how often the ledger is counted while jobs run.
	benchPoll = 200 * time.Millisecond
	// benchStall fails a run in which no job succeeds for this long.
	benchStall = 30 * time.Second
	// benchDBConns is how many Postgres connections the workers may open together by default:
	// each gets an equal share, at most the worker's own default of 20.
	benchDBConns = 60
	// benchCleanup bounds the removal of the bench's streams and schema.
	benchCleanup = 30 * time.Second
)

// benchOptions are bench's flags.
type benchOptions struct {
	jobs         int
	workers      int
	concurrency  int
	payloadBytes int
	kind         string
	rate         string
	duration     time.Duration
	dbConns      int
	json         bool
	cpuProfile   string
	blockProfile string
	backlog      int
}

func newBenchCmd(conn *cli.Connection) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure publish, work and end-to-end throughput, and latency, on the given services",
		Long: `Measure Levee against the NATS and Postgres given by --nats-url and --database-url, with
in-process workers (levee.Worker) whose handler does nothing. The run uses a namespace of its
own, bench_<random>, and removes its streams and ledger schema at the end; --namespace is
not used.

By default bench runs three phases of --jobs jobs each:
  publish  publish the jobs with Client.PublishBatch (asynchronous), no worker running
  work     start --workers workers and burn the backlog down, timed from the first claim to
           the last success recorded in the ledger
  e2e      with the workers running, publish --jobs more: timed from the first publish to the
           last success. A backlog forms when publishing outruns the workers, so its latency
           measures queueing too; use --rate for the latency at a given load.

With --backlog N it instead publishes N jobs (in chunks, so the publisher's memory stays small),
then runs the workers for --duration against that backlog and reports their work rate and
peak RSS; on Linux the peak is reset before the workers start, so the publisher's memory is
not counted. No latency is measured in this mode.

With --rate (and --duration) it instead publishes at that rate for that long with the workers
running, waits for the jobs to succeed, and reports the latency at that load.

It reports jobs per second for each phase; the latency of the e2e (or --rate) jobs, each job's
finished_at - enqueued_at in the ledger, as p50, p90, p99 and max; the Postgres transactions
committed per job during the work phase (pg_stat_database's xact_commit for the whole
database, so other clients of the database count too); this process's CPU seconds and peak
RSS (getrusage: the workers, the bench's own polling, and the publisher while it publishes);
and the machine: cores, Go, NATS server and PostgreSQL versions. --json prints one object.

Exit codes: 0 ok, 1 error (a service unreachable, a job that did not succeed, no progress for
30s), 2 usage error.`,
		Example: `  enqueue bench
  enqueue bench --jobs 5000 --workers 2 --json
  enqueue bench --payload-bytes 4096
  enqueue bench --rate 1000/s --duration 30s
  enqueue bench --backlog 1000000 --duration 30s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.jobs, "jobs", 20000, "jobs per phase")
	fs.IntVar(&o.workers, "workers", 1, "in-process workers, each with its own NATS connection and Postgres pool")
	fs.IntVar(&o.concurrency, "concurrency", 64, "jobs each worker runs at once (the kind's concurrency policy)")
	fs.IntVar(&o.payloadBytes, "payload-bytes", 64, "size of each job's payload, a JSON string")
	fs.StringVar(&o.kind, "kind", "noop", "kind of the jobs; the handler is always a no-op")
	fs.StringVar(&o.rate, "rate", "", `publish at this steady rate instead of in bursts, e.g. "5000/s"`)
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long --rate publishes")
	fs.IntVar(&o.dbConns, "db-conns", 0, fmt.Sprintf("Postgres connections per worker; 0 shares %d among the workers, at most 20 each", benchDBConns))
	fs.BoolVar(&o.json, "json", false, "print the results as one JSON object")
	fs.IntVar(&o.backlog, "backlog", 0, "instead of the phases: publish this many jobs first, then work for --duration and report the work rate and the peak RSS of the workers alone")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a pprof CPU profile of the work phase (with --rate, of the steady run) to this file")
	fs.StringVar(&o.blockProfile, "block-profile", "", "write a pprof block profile (goroutines waiting on channels, locks, select) of the same span to this file")
	return cmd
}

// check validates the flags and returns the steady rate (the zero Rate without --rate).
func (o *benchOptions) check(fs *pflag.FlagSet) (executor.Rate, error) {
	switch {
	case o.jobs < 1:
		return executor.Rate{}, cli.Usagef("invalid --jobs %d: give at least 1", o.jobs)
	case o.workers < 1:
		return executor.Rate{}, cli.Usagef("invalid --workers %d: give at least 1", o.workers)
	case o.concurrency < 1:
		return executor.Rate{}, cli.Usagef("invalid --concurrency %d: give at least 1", o.concurrency)
	case o.payloadBytes < 2 || o.payloadBytes > queue.DefaultMaxPayload:
		return executor.Rate{}, cli.Usagef("invalid --payload-bytes %d: give 2 to %d", o.payloadBytes, queue.DefaultMaxPayload)
	case o.dbConns < 0:
		return executor.Rate{}, cli.Usagef("invalid --db-conns %d: give a positive number, or 0 for the default", o.dbConns)
	}
	if err := queue.ValidateKind(o.kind); err != nil {
		return executor.Rate{}, &cli.UsageError{Err: err}
	}
	if o.backlog != 0 {
		switch {
		case o.backlog < 0:
			return executor.Rate{}, cli.Usagef("invalid --backlog %d: give a number of jobs such as 1000000", o.backlog)
		case fs.Changed("rate") || fs.Changed("jobs"):
			return executor.Rate{}, cli.Usagef("give --backlog alone, without --jobs or --rate: it publishes --backlog jobs, then works for --duration")
		case o.duration <= 0:
			return executor.Rate{}, cli.Usagef("invalid --duration %s: give a positive duration such as 30s", o.duration)
		}
		return executor.Rate{}, nil
	}
	if !fs.Changed("rate") {
		if fs.Changed("duration") {
			return executor.Rate{}, cli.Usagef("--duration goes with --rate or --backlog")
		}
		return executor.Rate{}, nil
	}
	r, err := executor.ParseRate(o.rate)
	if err != nil {
		return executor.Rate{}, cli.Usagef("invalid --rate: %w", err)
	}
	switch {
	case r.IsZero():
		return executor.Rate{}, cli.Usagef(`invalid --rate %q: give a rate such as "5000/s"`, o.rate)
	case o.duration <= 0:
		return executor.Rate{}, cli.Usagef("invalid --duration %s: give a positive duration such as 30s", o.duration)
	case fs.Changed("jobs"):
		return executor.Rate{}, cli.Usagef("give --jobs or --rate, not both: with --rate, --duration decides how many jobs are published")
	}
	return r, nil
}

// workerConns is how many Postgres connections each worker may open.
func (o *benchOptions) workerConns() int {
	if o.dbConns > 0 {
		return o.dbConns
	}
	return min(20, max(2, benchDBConns/o.workers))
}

// benchReport is what bench prints; its JSON form is --json's.
type benchReport struct {
	Mode      string `json:"mode"` // "burst", "steady" with --rate, "backlog" with --backlog
	Namespace string `json:"namespace"`
	Kind      string `json:"kind"`
	Jobs      int    `json:"jobs"` // per phase; with --rate, the jobs published; with --backlog, the backlog
	// Worked is how many of the backlog's jobs the workers finished in --duration (--backlog).
	Worked       int     `json:"worked,omitempty"`
	Workers      int     `json:"workers"`
	Concurrency  int     `json:"concurrency"`
	PayloadBytes int     `json:"payload_bytes"`
	DBConns      int     `json:"db_conns_per_worker"`
	Rate         string  `json:"rate,omitempty"`
	DurationS    float64 `json:"duration_s,omitempty"`

	PublishJobsPerSec float64 `json:"publish_jobs_per_sec"`
	WorkJobsPerSec    float64 `json:"work_jobs_per_sec"`
	E2EJobsPerSec     float64 `json:"e2e_jobs_per_sec"`
	// E2EPublishJobsPerSec is how fast the e2e jobs were published, with the workers running.
	E2EPublishJobsPerSec float64      `json:"e2e_publish_jobs_per_sec,omitempty"`
	LatencyMS            benchLatency `json:"latency_ms"`
	PGTxPerJob           float64      `json:"pg_tx_per_job"`

	PublishCPUSeconds float64 `json:"publish_cpu_seconds,omitempty"`
	// WorkerCPUSeconds is this process's CPU time over the work phase (with --rate, over the
	// whole run, publisher included).
	WorkerCPUSeconds float64 `json:"worker_cpu_seconds"`
	E2ECPUSeconds    float64 `json:"e2e_cpu_seconds,omitempty"`
	WorkerPeakRSSMB  float64 `json:"worker_peak_rss_mb"`
	// RSSReset says the peak RSS was reset before the workers started (--backlog on Linux), so
	// it is the workers' alone, not the publisher's.
	RSSReset bool `json:"rss_reset,omitempty"`

	Cores           int    `json:"cores"`
	GoVersion       string `json:"go_version"`
	Platform        string `json:"platform"`
	NATSServer      string `json:"nats_server_version"`
	PostgresVersion string `json:"postgres_version"`

	publishSeconds, workSeconds, e2eSeconds float64
}

// round keeps the digits that mean something: rates to 0.1 job/s, latencies to 0.01 ms.
func (r *benchReport) round() {
	to := func(x *float64, digits int) {
		p := math.Pow10(digits)
		*x = math.Round(*x*p) / p
	}
	for _, x := range []*float64{&r.PublishJobsPerSec, &r.WorkJobsPerSec, &r.E2EJobsPerSec, &r.E2EPublishJobsPerSec, &r.WorkerPeakRSSMB} {
		to(x, 1)
	}
	for _, x := range []*float64{&r.LatencyMS.P50, &r.LatencyMS.P90, &r.LatencyMS.P99, &r.LatencyMS.Max, &r.PublishCPUSeconds, &r.WorkerCPUSeconds, &r.E2ECPUSeconds} {
		to(x, 2)
	}
	to(&r.PGTxPerJob, 3)
}

// benchLatency holds latency percentiles in milliseconds.
type benchLatency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func runBench(cmd *cobra.Command, conn *cli.Connection, o benchOptions) error {
	steady, err := o.check(cmd.Flags())
	if err != nil {
		return err
	}
	natsOpts, err := conn.NATSOptions()
	if err != nil {
		return err
	}
	ctx, stderr := cmd.Context(), cmd.ErrOrStderr()
	b, err := openBench(ctx, conn, natsOpts, o, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if err := b.close(); err != nil {
			fmt.Fprintf(stderr, "enqueue: bench: remove namespace %s: %v\n", b.ns, err)
		}
	}()

	var rep *benchReport
	switch {
	case o.backlog > 0:
		rep, err = b.runBacklog(ctx)
	case steady.IsZero():
		rep, err = b.runBurst(ctx)
	default:
		rep, err = b.runSteady(ctx, steady)
	}
	if err != nil {
		return err
	}
	if err := b.describe(ctx, rep); err != nil {
		return err
	}
	rep.round()
	if o.json {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
	}
	return printBench(cmd.OutOrStdout(), rep)
}

// bench is one run's connections and namespace.
type bench struct {
	o        benchOptions
	conn     *cli.Connection
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
}

// openBench connects to both services, creates a fresh namespace's streams and ledger schema,
// and returns the run. Close it to remove them.
func openBench(ctx context.Context, conn *cli.Connection, natsOpts []nats.Option, o benchOptions, stderr io.Writer) (*bench, error) {
	logger, err := cli.NewLogger(stderr, "warn")
	if err != nil {
		return nil, err
	}
	b := &bench{
		o: o, conn: conn, natsOpts: natsOpts, log: logger, stderr: stderr,
		ns: benchNamespace(), payload: benchPayload(o.payloadBytes),
	}
	b.nc, err = nats.Connect(conn.NATSURL, append([]nats.Option{nats.Name("levee-bench"), nats.Timeout(5 * time.Second)}, natsOpts...)...)
	if err != nil {
		return nil, cli.ConnectHint(&levee.ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: %w", levee.RedactURL(conn.NATSURL), err)})
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
		return cli.ConnectHint(&levee.ConnectError{Service: "postgres", Err: fmt.Errorf("invalid database URL %s: %w", levee.RedactURL(b.conn.DatabaseURL), err)})
	}
	pcfg.MaxConns = 2
	if b.pool, err = pgxpool.NewWithConfig(ctx, pcfg); err != nil {
		return cli.ConnectHint(&levee.ConnectError{Service: "postgres", Err: fmt.Errorf("open Postgres at %s: %w", levee.RedactURL(b.conn.DatabaseURL), err)})
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := b.pool.Ping(pctx); err != nil {
		b.pool.Close()
		b.pool = nil // nothing was created there
		return cli.ConnectHint(&levee.ConnectError{Service: "postgres", Err: fmt.Errorf("connect to Postgres at %s: %w", levee.RedactURL(b.conn.DatabaseURL), err)})
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

// runBurst runs the publish, work and e2e phases.
func (b *bench) runBurst(ctx context.Context) (*benchReport, error) {
	rep := b.report("burst", b.o.jobs)
	if err := b.publishPhase(ctx, rep); err != nil {
		return nil, err
	}
	if err := b.workPhase(ctx, rep); err != nil {
		return nil, err
	}
	if err := b.e2ePhase(ctx, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// publishPhase publishes the jobs with no worker running.
func (b *bench) publishPhase(ctx context.Context, rep *benchReport) error {
	b.note("publishing %d jobs", rep.Jobs)
	u0 := readUsage()
	took, err := b.publish(ctx, rep.Jobs)
	if err != nil {
		return err
	}
	rep.publishSeconds = took.Seconds()
	rep.PublishJobsPerSec = perSecond(rep.Jobs, took)
	rep.PublishCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	return nil
}

// workPhase starts the workers on the published backlog and waits until it is worked off.
// The workers are stopped at the end: their Postgres sessions end, which makes the server
// count their transactions at once.
func (b *bench) workPhase(ctx context.Context, rep *benchReport) error {
	b.note("working them off with %s", plural(b.o.workers, "worker", "workers"))
	tx0, err := b.commits(ctx)
	if err != nil {
		return err
	}
	u0 := readUsage()
	stopProfiles, err := b.startProfiles()
	if err != nil {
		return err
	}
	fleet, err := b.startFleet(ctx)
	if err != nil {
		stopProfiles()
		return err
	}
	defer func() { _ = fleet.stop() }()
	err = b.waitSucceeded(ctx, fleet, rep.Jobs)
	stopProfiles()
	if err != nil {
		return err
	}
	if err := fleet.stop(); err != nil {
		return err
	}
	tx1, err := b.settledCommits(ctx)
	if err != nil {
		return err
	}
	rep.WorkerCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	rep.PGTxPerJob = float64(tx1-tx0) / float64(rep.Jobs)
	first, last, err := b.window(ctx)
	if err != nil {
		return err
	}
	rep.workSeconds = last.Sub(first).Seconds()
	rep.WorkJobsPerSec = perSecond(rep.Jobs, last.Sub(first))
	return nil
}

// startProfiles starts the CPU and block profiles asked for by --cpu-profile and
// --block-profile; the returned func stops them and writes the files (a failure to write is
// reported on stderr, the run goes on).
func (b *bench) startProfiles() (stop func(), err error) {
	var cpu *os.File
	if b.o.cpuProfile != "" {
		if cpu, err = os.Create(b.o.cpuProfile); err != nil {
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			_ = cpu.Close()
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
	}
	if b.o.blockProfile != "" {
		runtime.SetBlockProfileRate(int(time.Millisecond / 10)) // a sample per 100 µs blocked
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				b.note("cpu profile: %v", err)
			}
		}
		if b.o.blockProfile != "" {
			runtime.SetBlockProfileRate(0)
			if err := writeProfile("block", b.o.blockProfile); err != nil {
				b.note("block profile: %v", err)
			}
		}
	}, nil
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// e2ePhase publishes the jobs again with the workers running, and waits until they succeed.
func (b *bench) e2ePhase(ctx context.Context, rep *benchReport) error {
	b.note("publishing %d more with the workers running", rep.Jobs)
	fleet, err := b.startFleet(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = fleet.stop() }()
	if err := fleet.ready(ctx); err != nil {
		return err
	}
	offset, err := b.clockOffset(ctx)
	if err != nil {
		return err
	}
	u0 := readUsage()
	start := time.Now()
	took, err := b.publish(ctx, rep.Jobs)
	if err != nil {
		return err
	}
	rep.E2EPublishJobsPerSec = perSecond(rep.Jobs, took)
	if err := b.waitSucceeded(ctx, fleet, 2*rep.Jobs); err != nil {
		return err
	}
	rep.E2ECPUSeconds = readUsage().cpu.Sub(u0.cpu)
	lat, lastFinish, err := b.latency(ctx, start, offset)
	if err != nil {
		return err
	}
	rep.LatencyMS = lat
	rep.e2eSeconds = lastFinish.Sub(start).Seconds()
	rep.E2EJobsPerSec = perSecond(rep.Jobs, lastFinish.Sub(start))
	return fleet.stop()
}

// backlogChunk is how many jobs --backlog publishes with one PublishBatch.
const backlogChunk = 10000

// runBacklog publishes --backlog jobs, then works on them for --duration: the work rate and
// the workers' memory with a deep backlog waiting in the stream.
func (b *bench) runBacklog(ctx context.Context) (*benchReport, error) {
	rep := b.report("backlog", b.o.backlog)
	rep.DurationS = b.o.duration.Seconds()
	b.note("publishing a backlog of %d jobs", b.o.backlog)
	u0 := readUsage()
	start := time.Now()
	for done := 0; done < b.o.backlog; {
		n := min(backlogChunk, b.o.backlog-done)
		if _, err := b.publish(ctx, n); err != nil {
			return nil, err
		}
		done += n
		if done%(20*backlogChunk) == 0 {
			b.note("published %d", done)
		}
	}
	rep.publishSeconds = time.Since(start).Seconds()
	rep.PublishJobsPerSec = perSecond(b.o.backlog, time.Since(start))
	rep.PublishCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	rep.RSSReset = resetPeakRSS()

	b.note("working on it for %s with %s", b.o.duration, plural(b.o.workers, "worker", "workers"))
	tx0, err := b.commits(ctx)
	if err != nil {
		return nil, err
	}
	u0 = readUsage()
	stopProfiles, err := b.startProfiles()
	if err != nil {
		return nil, err
	}
	fleet, err := b.startFleet(ctx)
	if err != nil {
		stopProfiles()
		return nil, err
	}
	defer func() { _ = fleet.stop() }()
	select {
	case <-ctx.Done():
	case <-fleet.failed():
	case <-time.After(b.o.duration):
	}
	stopProfiles()
	if err := fleet.stop(); err != nil {
		return nil, fmt.Errorf("a worker stopped: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u1 := readUsage()
	rep.WorkerCPUSeconds = u1.cpu.Sub(u0.cpu)
	rep.WorkerPeakRSSMB = float64(peakRSSSinceReset()) / (1 << 20)
	tx1, err := b.settledCommits(ctx)
	if err != nil {
		return nil, err
	}
	p, err := b.progress(ctx)
	if err != nil {
		return nil, err
	}
	if p.dead > 0 {
		return nil, fmt.Errorf("%d jobs ended dead (reasons: %s); no-op jobs should all succeed", p.dead, p.reasons)
	}
	if p.succeeded == 0 {
		return nil, fmt.Errorf("no job succeeded in %s", b.o.duration)
	}
	first, last, err := b.window(ctx)
	if err != nil {
		return nil, err
	}
	rep.Worked = p.succeeded
	rep.workSeconds = last.Sub(first).Seconds()
	rep.WorkJobsPerSec = perSecond(p.succeeded, last.Sub(first))
	rep.PGTxPerJob = float64(tx1-tx0) / float64(p.succeeded)
	return rep, nil
}

// runSteady publishes at rate r for the run's duration with the workers running.
func (b *bench) runSteady(ctx context.Context, r executor.Rate) (*benchReport, error) {
	fleet, err := b.startFleet(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = fleet.stop() }()
	if err := fleet.ready(ctx); err != nil {
		return nil, err
	}
	offset, err := b.clockOffset(ctx)
	if err != nil {
		return nil, err
	}
	tx0, err := b.commits(ctx)
	if err != nil {
		return nil, err
	}
	b.note("publishing at %s for %s with %s", r, b.o.duration, plural(b.o.workers, "worker", "workers"))
	u0 := readUsage()
	stopProfiles, err := b.startProfiles()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	n, took, err := b.publishAt(ctx, r, b.o.duration)
	if err == nil && n == 0 {
		err = errors.New("no job was published")
	}
	if err == nil {
		err = b.waitSucceeded(ctx, fleet, n)
	}
	stopProfiles()
	if err != nil {
		return nil, err
	}
	if err := fleet.stop(); err != nil {
		return nil, err
	}
	tx1, err := b.settledCommits(ctx)
	if err != nil {
		return nil, err
	}
	rep := b.report("steady", n)
	rep.Rate, rep.DurationS = r.String(), b.o.duration.Seconds()
	rep.WorkerCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	rep.PGTxPerJob = float64(tx1-tx0) / float64(n)
	rep.publishSeconds = took.Seconds()
	rep.PublishJobsPerSec = perSecond(n, took)
	first, last, err := b.window(ctx)
	if err != nil {
		return nil, err
	}
	rep.workSeconds = last.Sub(first).Seconds()
	rep.WorkJobsPerSec = perSecond(n, last.Sub(first))
	lat, lastFinish, err := b.latency(ctx, start, offset)
	if err != nil {
		return nil, err
	}
	rep.LatencyMS = lat
	rep.e2eSeconds = lastFinish.Sub(start).Seconds()
	rep.E2EJobsPerSec = perSecond(n, lastFinish.Sub(start))
	return rep, nil
}

func (b *bench) report(mode string, jobs int) *benchReport {
	return &benchReport{
		Mode: mode, Namespace: b.ns, Kind: b.o.kind, Jobs: jobs, Workers: b.o.workers,
		Concurrency: b.o.concurrency, PayloadBytes: b.o.payloadBytes, DBConns: b.o.workerConns(),
	}
}

// describe adds the machine and the peak RSS to rep.
func (b *bench) describe(ctx context.Context, rep *benchReport) error {
	rep.Cores = runtime.NumCPU()
	rep.GoVersion = runtime.Version()
	rep.Platform = runtime.GOOS + "/" + runtime.GOARCH
	rep.NATSServer = b.nc.ConnectedServerVersion()
	if err := b.pool.QueryRow(ctx, "SHOW server_version").Scan(&rep.PostgresVersion); err != nil {
		return fmt.Errorf("read the Postgres version: %w", err)
	}
	rep.PostgresVersion, _, _ = strings.Cut(rep.PostgresVersion, " ") // "15.20 (Debian 15.20-0+deb12u1)"
	if rep.Mode != "backlog" {                                        // measured after the reset, with the workers alone
		rep.WorkerPeakRSSMB = float64(readUsage().maxRSS) / (1 << 20)
	}
	return nil
}

// publish publishes n jobs with one PublishBatch and returns how long it took.
func (b *bench) publish(ctx context.Context, n int) (time.Duration, error) {
	specs := b.specs(n)
	start := time.Now()
	results, err := b.client.PublishBatch(ctx, specs, nil)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	return took, refused(results)
}

// publishAt publishes at rate r until d has passed and returns how many jobs it published and
// how long that took. It publishes 10ms worth of jobs at a time, paced by a token bucket.
func (b *bench) publishAt(ctx context.Context, r executor.Rate, d time.Duration) (int, time.Duration, error) {
	chunk := int(min(max(1, math.Round(r.PerSecond()/100)), 1000))
	lim := executor.NewLimiter(r, chunk, nil)
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	n := 0
	start := time.Now()
	for {
		k, err := lim.Available(pctx, chunk)
		if err != nil {
			break // d has passed, or ctx ended (checked below)
		}
		lim.Take(k)
		results, err := b.client.PublishBatch(ctx, b.specs(k), nil)
		if err != nil {
			return n, 0, err
		}
		if err := refused(results); err != nil {
			return n, 0, err
		}
		n += k
	}
	if err := ctx.Err(); err != nil {
		return n, 0, err
	}
	return n, time.Since(start), nil
}

func (b *bench) specs(n int) []levee.JobSpec {
	specs := make([]levee.JobSpec, n)
	for i := range specs {
		specs[i] = levee.JobSpec{Kind: b.o.kind, Payload: b.payload}
	}
	return specs
}

// refused returns an error naming the first refused job, if any was.
func refused(results []levee.PublishResult) error {
	failed := 0
	var first error
	for _, r := range results {
		if r.Err != nil {
			failed++
			first = cmp.Or(first, fmt.Errorf("publish job %s: %w", r.ID, r.Err))
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d jobs refused; the first: %w", failed, len(results), first)
	}
	return nil
}

// waitSucceeded counts the ledger's succeeded keys every benchPoll until there are want. It
// fails if a job ends dead, a worker stops, or no job succeeds for benchStall.
func (b *bench) waitSucceeded(ctx context.Context, fleet *benchFleet, want int) error {
	tick := time.NewTicker(benchPoll)
	defer tick.Stop()
	last, lastAt := -1, time.Now()
	for {
		p, err := b.progress(ctx)
		if err != nil {
			return err
		}
		if p.dead > 0 {
			return fmt.Errorf("%d jobs ended dead (reasons: %s); no-op jobs should all succeed", p.dead, p.reasons)
		}
		if p.succeeded >= want {
			return nil
		}
		if p.succeeded != last {
			last, lastAt = p.succeeded, time.Now()
		} else if time.Since(lastAt) >= benchStall {
			return fmt.Errorf("no job succeeded for %s: %d of %d succeeded", benchStall, p.succeeded, want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-fleet.failed():
			if err := ctx.Err(); err != nil {
				return err
			}
			return fmt.Errorf("a worker stopped: %w", fleet.stop())
		case <-tick.C:
		}
	}
}

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
	policy := levee.Policy{Concurrency: b.o.concurrency, FleetConcurrency: max(1000, b.o.workers*b.o.concurrency)}
	for i := range b.o.workers {
		w, err := levee.NewWorker(levee.WorkerConfig{
			NATSURL: b.conn.NATSURL, NATSOptions: b.natsOpts, DatabaseURL: b.conn.DatabaseURL,
			DatabaseMaxConns: int32(b.o.workerConns()), Namespace: b.ns, Logger: b.log,
			ID: fmt.Sprintf("bench-%d", i+1), ShutdownTimeout: 10 * time.Second, SkipMigrate: true,
		})
		if err != nil {
			return nil, err
		}
		if err := w.Handle(b.o.kind, builtin.Noop, policy); err != nil {
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

// failed is closed when a worker returned an error (or the run's context ended).
func (f *benchFleet) failed() <-chan struct{} { return f.gctx.Done() }

// ready waits until every worker is serving.
func (f *benchFleet) ready(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, benchStall)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, w := range f.workers {
		for w.Health(rctx).Status == levee.Unhealthy {
			select {
			case <-f.gctx.Done():
				if err := ctx.Err(); err != nil {
					return err
				}
				return fmt.Errorf("a worker stopped: %w", f.stop())
			case <-rctx.Done():
				if err := ctx.Err(); err != nil {
					return err
				}
				return fmt.Errorf("workers not ready after %s: %v", benchStall, w.Health(ctx).Checks)
			case <-tick.C:
			}
		}
	}
	return nil
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
	if err := b.pool.QueryRow(ctx, b.sql.progress, b.o.kind).Scan(&p.succeeded, &p.dead, &p.reasons); err != nil {
		return p, fmt.Errorf("count finished jobs: %w", err)
	}
	return p, nil
}

// window returns the first claim and the last success of the kind's jobs, on the database's
// clock.
func (b *bench) window(ctx context.Context) (first, last time.Time, err error) {
	b.statements++
	if err := b.pool.QueryRow(ctx, b.sql.window, b.o.kind).Scan(&first, &last); err != nil {
		return first, last, fmt.Errorf("read the work window: %w", err)
	}
	return first, last, nil
}

// latency returns the percentiles of finished_at - enqueued_at over the jobs enqueued since
// start, and the last of their successes on this process's clock.
func (b *bench) latency(ctx context.Context, since time.Time, offset time.Duration) (benchLatency, time.Time, error) {
	var (
		pct  []float64
		l    benchLatency
		last time.Time
	)
	b.statements++
	offsetMS := float64(offset) / float64(time.Millisecond)
	if err := b.pool.QueryRow(ctx, b.sql.latency, b.o.kind, since, offsetMS).Scan(&pct, &l.Max, &last); err != nil {
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

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// procUsage is this process's resource use so far.
type procUsage struct {
	cpu    cpuTime
	maxRSS int64 // bytes
}

// cpuTime is user plus system CPU time.
type cpuTime time.Duration

// Sub returns c - d in seconds.
func (c cpuTime) Sub(d cpuTime) float64 { return time.Duration(c - d).Seconds() }

// readUsage reads getrusage(RUSAGE_SELF): user and system CPU time, and the peak RSS.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		d = time.Microsecond
	}
	return float64(n) / d.Seconds()
}

// printBench writes rep as a readable report.
func printBench(w io.Writer, rep *benchReport) error {
	var buf bytes.Buffer
	workers := plural(rep.Workers, "worker", "workers")
	switch rep.Mode {
	case "backlog":
		fmt.Fprintf(&buf, "Levee bench: a backlog of %d %s jobs (%d B payload), worked for %s by %s, concurrency %d\n",
			rep.Jobs, rep.Kind, rep.PayloadBytes, time.Duration(rep.DurationS*float64(time.Second)), workers, rep.Concurrency)
	case "steady":
		fmt.Fprintf(&buf, "Levee bench: %s for %s of %s jobs (%d B payload), %s, concurrency %d\n",
			rep.Rate, time.Duration(rep.DurationS*float64(time.Second)), rep.Kind, rep.PayloadBytes, workers, rep.Concurrency)
	default:
		fmt.Fprintf(&buf, "Levee bench: %d %s jobs per phase (%d B payload), %s, concurrency %d\n",
			rep.Jobs, rep.Kind, rep.PayloadBytes, workers, rep.Concurrency)
	}
	fmt.Fprintf(&buf, "machine: %d cores, %s %s, NATS %s, PostgreSQL %s\n\n",
		rep.Cores, rep.GoVersion, rep.Platform, rep.NATSServer, rep.PostgresVersion)

	if rep.Mode == "backlog" {
		return printBacklog(w, &buf, rep)
	}
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tJOBS\tSECONDS\tJOBS/S\tCPU S")
	if rep.Mode == "steady" {
		fmt.Fprintf(tw, "publish\t%d\t%.2f\t%.0f\t\tpaced at %s, workers running\n", rep.Jobs, rep.publishSeconds, rep.PublishJobsPerSec, rep.Rate)
		fmt.Fprintf(tw, "work\t%d\t%.2f\t%.0f\t%.2f\tfirst claim to last success; CPU of the whole run\n", rep.Jobs, rep.workSeconds, rep.WorkJobsPerSec, rep.WorkerCPUSeconds)
		fmt.Fprintf(tw, "e2e\t%d\t%.2f\t%.0f\t\tfirst publish to last success\n", rep.Jobs, rep.e2eSeconds, rep.E2EJobsPerSec)
	} else {
		fmt.Fprintf(tw, "publish\t%d\t%.2f\t%.0f\t%.2f\tno worker running\n", rep.Jobs, rep.publishSeconds, rep.PublishJobsPerSec, rep.PublishCPUSeconds)
		fmt.Fprintf(tw, "work\t%d\t%.2f\t%.0f\t%.2f\tfirst claim to last success\n", rep.Jobs, rep.workSeconds, rep.WorkJobsPerSec, rep.WorkerCPUSeconds)
		fmt.Fprintf(tw, "e2e\t%d\t%.2f\t%.0f\t%.2f\tfirst publish to last success; published at %.0f jobs/s meanwhile\n",
			rep.Jobs, rep.e2eSeconds, rep.E2EJobsPerSec, rep.E2ECPUSeconds, rep.E2EPublishJobsPerSec)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	which, during := "e2e jobs", "the work phase"
	if rep.Mode == "steady" {
		which, during = "all jobs", "the run"
	}
	l := rep.LatencyMS
	fmt.Fprintf(&buf, "\nlatency, enqueued to succeeded (%s): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms\n", which, l.P50, l.P90, l.P99, l.Max)
	fmt.Fprintf(&buf, "Postgres: %.3f transactions committed per job during %s (the whole database's count)\n", rep.PGTxPerJob, during)
	fmt.Fprintf(&buf, "peak RSS: %.1f MB. CPU and memory are this process's: workers, the bench's polling, and the\npublisher while it publishes; NATS and Postgres run in their own processes.\n", rep.WorkerPeakRSSMB)
	_, err := w.Write(buf.Bytes())
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

// printBacklog finishes the text report of a --backlog run.
func printBacklog(w io.Writer, buf *bytes.Buffer, rep *benchReport) error {
	tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PHASE\tJOBS\tSECONDS\tJOBS/S\tCPU S")
	fmt.Fprintf(tw, "publish\t%d\t%.2f\t%.0f\t%.2f\tthe backlog, in chunks of %d, no worker running\n",
		rep.Jobs, rep.publishSeconds, rep.PublishJobsPerSec, rep.PublishCPUSeconds, backlogChunk)
	fmt.Fprintf(tw, "work\t%d\t%.2f\t%.0f\t%.2f\tfirst claim to last success within --duration\n",
		rep.Worked, rep.workSeconds, rep.WorkJobsPerSec, rep.WorkerCPUSeconds)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(buf, "\nPostgres: %.3f transactions committed per job while working\n", rep.PGTxPerJob)
	if rep.RSSReset {
		fmt.Fprintf(buf, "peak RSS of the workers, %d jobs still waiting in the stream: %.1f MB (reset after publishing)\n", rep.Jobs-rep.Worked, rep.WorkerPeakRSSMB)
	} else {
		fmt.Fprintf(buf, "peak RSS of this process, publisher included (it could not be reset here): %.1f MB\n", rep.WorkerPeakRSSMB)
	}
	_, err := w.Write(buf.Bytes())
	return err
}
