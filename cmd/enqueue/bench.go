package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/levee-dev/levee/cmd/internal/bench"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
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
	memProfile   string
	noE2E        bool
	scheduled    int
	spread       time.Duration
	tx           bool
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
--no-e2e stops after the work phase (make bench-scale uses it). The workers run with the
worker binary's defaults (concurrency 10 per kind) unless --concurrency says otherwise, so
that the figures are those users get.

With --backlog N it instead publishes N jobs (in chunks, so the publisher's memory stays small),
then runs the workers for --duration against that backlog and reports their work rate and
peak RSS; on Linux the peak is reset before the workers start, so the publisher's memory is
not counted. No latency is measured in this mode.

With --rate (and --duration) it instead publishes at that rate for that long with the workers
running, waits for the jobs to succeed, and reports the latency at that load. With --tx each
chunk is published with PublishBatchTx in a transaction of its own, and the latency runs from
that transaction through the outbox relay (design rule 43).

With --scheduled N it instead stores N delayed jobs in the ledger, all due at the same second
(or with --spread D, due at times spread evenly over D), with the workers running: it reports
how long after the last run_at the dispatchers had published them all and the workers had
finished them, and each job's claim lateness (its first claim less its run_at) as p50, p90,
p99 and max.

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
  enqueue bench --backlog 1000000 --duration 30s
  enqueue bench --rate 500/s --duration 20s --tx
  enqueue bench --scheduled 100000 --workers 3
  enqueue bench --scheduled 2000 --spread 20s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.IntVar(&o.jobs, "jobs", 20000, "jobs per phase")
	fs.IntVar(&o.workers, "workers", 1, "in-process workers, each with its own NATS connection and Postgres pool")
	fs.IntVar(&o.concurrency, "concurrency", leveetype.DefaultConcurrency, "jobs each worker runs at once (the kind's concurrency policy; the default is the worker's, so that the bench measures what users get)")
	fs.IntVar(&o.payloadBytes, "payload-bytes", 64, "size of each job's payload, a JSON string")
	fs.StringVar(&o.kind, "kind", "noop", "kind of the jobs; the handler is always a no-op")
	fs.StringVar(&o.rate, "rate", "", `publish at this steady rate instead of in bursts, e.g. "5000/s"`)
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long --rate publishes")
	fs.IntVar(&o.dbConns, "db-conns", 0, fmt.Sprintf("Postgres connections per worker; 0 shares %d among the workers, at most 20 each", bench.DefaultDBConns))
	fs.BoolVar(&o.json, "json", false, "print the results as one JSON object")
	fs.BoolVar(&o.noE2E, "no-e2e", false, "run the publish and work phases only (how cost grows with the backlog: make bench-scale)")
	fs.IntVar(&o.backlog, "backlog", 0, "instead of the phases: publish this many jobs first, then work for --duration and report the work rate and the peak RSS of the workers alone")
	fs.IntVar(&o.scheduled, "scheduled", 0, "instead of the phases: store this many jobs in the ledger, all due at the same second, with the workers running, and report how long the dispatchers took to publish them and how late each was claimed")
	fs.DurationVar(&o.spread, "spread", 0, "with --scheduled: spread the jobs' run_at evenly over this span instead (the lateness of a steady flow of due jobs)")
	fs.BoolVar(&o.tx, "tx", false, "with --rate: publish each chunk with PublishBatchTx in a transaction of its own, so that the latency runs from the transaction through the outbox relay")
	fs.StringVar(&o.cpuProfile, "cpu-profile", "", "write a pprof CPU profile of the work phase (with --rate, of the steady run) to this file")
	fs.StringVar(&o.memProfile, "mem-profile", "", "write a pprof allocation profile of the process at the end of the same span to this file (go tool pprof -sample_index=alloc_space)")
	fs.StringVar(&o.blockProfile, "block-profile", "", "write a pprof block profile (goroutines waiting on channels, locks, select) of the same span to this file")
	return cmd
}

// check validates the flags and returns the steady rate (the zero Rate without --rate).
func (o *benchOptions) check(fs *pflag.FlagSet) (leveetype.Rate, error) {
	switch {
	case o.jobs < 1:
		return leveetype.Rate{}, cli.Usagef("invalid --jobs %d: give at least 1", o.jobs)
	case o.workers < 1:
		return leveetype.Rate{}, cli.Usagef("invalid --workers %d: give at least 1", o.workers)
	case o.concurrency < 1:
		return leveetype.Rate{}, cli.Usagef("invalid --concurrency %d: give at least 1", o.concurrency)
	case o.payloadBytes < 2 || o.payloadBytes > queue.DefaultMaxPayload:
		return leveetype.Rate{}, cli.Usagef("invalid --payload-bytes %d: give 2 to %d", o.payloadBytes, queue.DefaultMaxPayload)
	case o.dbConns < 0:
		return leveetype.Rate{}, cli.Usagef("invalid --db-conns %d: give a positive number, or 0 for the default", o.dbConns)
	}
	if err := queue.ValidateKind(o.kind); err != nil {
		return leveetype.Rate{}, &cli.UsageError{Err: err}
	}
	if o.tx && !fs.Changed("rate") {
		return leveetype.Rate{}, cli.Usagef("--tx goes with --rate")
	}
	if fs.Changed("spread") && o.scheduled == 0 {
		return leveetype.Rate{}, cli.Usagef("--spread goes with --scheduled")
	}
	if o.scheduled != 0 {
		switch {
		case o.scheduled < 0:
			return leveetype.Rate{}, cli.Usagef("invalid --scheduled %d: give a number of jobs such as 100000", o.scheduled)
		case o.spread < 0:
			return leveetype.Rate{}, cli.Usagef("invalid --spread %s: give a positive duration such as 20s, or none", o.spread)
		case fs.Changed("rate") || fs.Changed("jobs") || o.backlog != 0 || fs.Changed("duration") || o.noE2E:
			return leveetype.Rate{}, cli.Usagef("give --scheduled alone (with --spread, --workers, --concurrency), without --jobs, --rate, --backlog, --duration or --no-e2e")
		}
		return leveetype.Rate{}, nil
	}
	if o.noE2E && (fs.Changed("rate") || o.backlog != 0) {
		return leveetype.Rate{}, cli.Usagef("--no-e2e goes with the phases, not with --rate or --backlog")
	}
	if o.backlog != 0 {
		switch {
		case o.backlog < 0:
			return leveetype.Rate{}, cli.Usagef("invalid --backlog %d: give a number of jobs such as 1000000", o.backlog)
		case fs.Changed("rate") || fs.Changed("jobs"):
			return leveetype.Rate{}, cli.Usagef("give --backlog alone, without --jobs or --rate: it publishes --backlog jobs, then works for --duration")
		case o.duration <= 0:
			return leveetype.Rate{}, cli.Usagef("invalid --duration %s: give a positive duration such as 30s", o.duration)
		}
		return leveetype.Rate{}, nil
	}
	if !fs.Changed("rate") {
		if fs.Changed("duration") {
			return leveetype.Rate{}, cli.Usagef("--duration goes with --rate or --backlog")
		}
		return leveetype.Rate{}, nil
	}
	r, err := leveetype.ParseRate(o.rate)
	if err != nil {
		return leveetype.Rate{}, cli.Usagef("invalid --rate: %w", err)
	}
	switch {
	case r.IsZero():
		return leveetype.Rate{}, cli.Usagef(`invalid --rate %q: give a rate such as "5000/s"`, o.rate)
	case o.duration <= 0:
		return leveetype.Rate{}, cli.Usagef("invalid --duration %s: give a positive duration such as 30s", o.duration)
	case fs.Changed("jobs"):
		return leveetype.Rate{}, cli.Usagef("give --jobs or --rate, not both: with --rate, --duration decides how many jobs are published")
	}
	return r, nil
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
	rep, err := bench.Run(cmd.Context(), bench.Conn{NATSURL: conn.NATSURL, DatabaseURL: conn.DatabaseURL, NATSOptions: natsOpts},
		bench.Options{
			Jobs: o.jobs, NoE2E: o.noE2E, Workers: o.workers, Concurrency: o.concurrency, PayloadBytes: o.payloadBytes, Kind: o.kind,
			Rate: steady, Duration: o.duration, DBConns: o.dbConns, CPUProfile: o.cpuProfile, BlockProfile: o.blockProfile, MemProfile: o.memProfile,
			Backlog: o.backlog, Scheduled: o.scheduled, Spread: o.spread, Tx: o.tx,
		}, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(rep)
	}
	return bench.Print(cmd.OutOrStdout(), rep)
}
