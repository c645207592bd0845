package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/leveetype"
)

// runBurst runs the publish, work and e2e phases.
func (b *bench) runBurst(ctx context.Context) (*Report, error) {
	rep := b.report("burst", b.o.Jobs)
	if err := b.publishPhase(ctx, rep); err != nil {
		return nil, err
	}
	if err := b.workPhase(ctx, rep); err != nil {
		return nil, err
	}
	if b.o.NoE2E {
		return rep, nil
	}
	if err := b.e2ePhase(ctx, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// publishPhase publishes the jobs with no worker running.
func (b *bench) publishPhase(ctx context.Context, rep *Report) error {
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
func (b *bench) workPhase(ctx context.Context, rep *Report) error {
	b.note("working them off with %s", cli.Count(b.o.Workers, "worker"))
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

// startProfiles starts the CPU, block and allocation profiles asked for by --cpu-profile,
// --block-profile and --mem-profile; the returned func stops them and writes the files (a failure to write is
// reported on stderr, the run goes on).
func (b *bench) startProfiles() (stop func(), err error) {
	var cpu *os.File
	if b.o.CPUProfile != "" {
		if cpu, err = os.Create(b.o.CPUProfile); err != nil {
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			_ = cpu.Close()
			return nil, fmt.Errorf("--cpu-profile: %w", err)
		}
	}
	if b.o.BlockProfile != "" {
		runtime.SetBlockProfileRate(int(time.Millisecond / 10)) // a sample per 100 µs blocked
	}
	if b.o.MemProfile != "" {
		runtime.GC() // the profile counts what the span allocates
		runtime.MemProfileRate = 64 << 10
	}
	return func() {
		if b.o.MemProfile != "" {
			if err := writeProfile("allocs", b.o.MemProfile); err != nil {
				b.note("memory profile: %v", err)
			}
		}
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				b.note("cpu profile: %v", err)
			}
		}
		if b.o.BlockProfile != "" {
			runtime.SetBlockProfileRate(0)
			if err := writeProfile("block", b.o.BlockProfile); err != nil {
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
func (b *bench) e2ePhase(ctx context.Context, rep *Report) error {
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
func (b *bench) runBacklog(ctx context.Context) (*Report, error) {
	rep := b.report("backlog", b.o.Backlog)
	rep.DurationS = b.o.Duration.Seconds()
	b.note("publishing a backlog of %d jobs", b.o.Backlog)
	u0 := readUsage()
	start := time.Now()
	for done := 0; done < b.o.Backlog; {
		n := min(backlogChunk, b.o.Backlog-done)
		if _, err := b.publish(ctx, n); err != nil {
			return nil, err
		}
		done += n
		if done%(20*backlogChunk) == 0 {
			b.note("published %d", done)
		}
	}
	rep.publishSeconds = time.Since(start).Seconds()
	rep.PublishJobsPerSec = perSecond(b.o.Backlog, time.Since(start))
	rep.PublishCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	rep.RSSReset = resetPeakRSS()

	b.note("working on it for %s with %s", b.o.Duration, cli.Count(b.o.Workers, "worker"))
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
	case <-time.After(b.o.Duration):
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
		return nil, fmt.Errorf("no job succeeded in %s", b.o.Duration)
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
func (b *bench) runSteady(ctx context.Context, r leveetype.Rate) (*Report, error) {
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
	b.note("publishing at %s for %s with %s", r, b.o.Duration, cli.Count(b.o.Workers, "worker"))
	u0 := readUsage()
	stopProfiles, err := b.startProfiles()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	n, took, err := b.publishAt(ctx, r, b.o.Duration)
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
	rep.Rate, rep.DurationS = r.String(), b.o.Duration.Seconds()
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

func (b *bench) report(mode string, jobs int) *Report {
	return &Report{
		Mode: mode, Namespace: b.ns, Kind: b.o.Kind, Jobs: jobs, Workers: b.o.Workers,
		Concurrency: b.o.Concurrency, PayloadBytes: b.o.PayloadBytes, DBConns: b.o.workerConns(),
	}
}

// describe adds the machine and the peak RSS to rep.
func (b *bench) describe(ctx context.Context, rep *Report) error {
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

// publish publishes n jobs with PublishBatch and returns how long it took. Jobs are published
// backlogChunk at a time, so that the publisher's memory does not grow
// with n (a million jobs' specs and results held at once took 900 MB).
func (b *bench) publish(ctx context.Context, n int) (time.Duration, error) {
	var took time.Duration
	for done := 0; done < n; {
		specs := b.specs(min(backlogChunk, n-done))
		start := time.Now()
		results, err := b.client.PublishBatch(ctx, specs, nil)
		took += time.Since(start)
		if err != nil {
			return 0, err
		}
		if err := refused(results); err != nil {
			return 0, err
		}
		done += len(specs)
	}
	return took, nil
}

// publishAt publishes at rate r until d has passed and returns how many jobs it published and
// how long that took. It publishes 10ms worth of jobs at a time, paced by a token bucket.
func (b *bench) publishAt(ctx context.Context, r leveetype.Rate, d time.Duration) (int, time.Duration, error) {
	chunk := int(min(max(1, math.Round(r.PerSecond()/100)), 1000))
	lim := executor.NewLimiter(r, chunk, nil)
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	// At most rate × d jobs plus the first chunk, however the timers fire near the deadline.
	budget := chunk + int(r.PerSecond()*d.Seconds())
	n := 0
	start := time.Now()
	for n < budget {
		k, err := lim.Available(pctx, chunk)
		if err != nil {
			break // d has passed, or ctx ended (checked below)
		}
		k = min(k, budget-n)
		lim.Take(k)
		results, err := b.publishChunk(ctx, k)
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

// publishChunk publishes n jobs at once, or with Options.Tx in a transaction of their own.
func (b *bench) publishChunk(ctx context.Context, n int) ([]levee.PublishResult, error) {
	if !b.o.Tx {
		return b.client.PublishBatch(ctx, b.specs(n), nil)
	}
	var results []levee.PublishResult
	b.statements++
	err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		var err error
		results, err = b.client.PublishBatchTx(ctx, tx, b.specs(n))
		return err
	})
	return results, err
}

func (b *bench) specs(n int) []levee.JobSpec {
	specs := make([]levee.JobSpec, n)
	for i := range specs {
		specs[i] = levee.JobSpec{Kind: b.o.Kind, Payload: b.payload}
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

// waitSucceeded waits until the ledger counts want succeeded keys. It reads the handler's
// call count every benchPoll and counts the ledger only once the calls since the wait began
// may have finished the jobs still missing then, or have not moved for benchQuiet: the
// ledger's count is the authority, the calls only spare it a scan per poll. A job that ends
// dead is found by the next count (at the latest when the calls stand still). It fails if a
// job ends dead, a worker stops, or no job succeeds for benchStall; while the calls move
// below the mark, the jobs are being run and the stall clock starts again.
func (b *bench) waitSucceeded(ctx context.Context, fleet *benchFleet, want int) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(fleet.gctx, cancel) // a worker that stops ends the wait
	defer stop()
	// The mark: as many calls as jobs were missing when the wait began. A job called more than
	// once (a retry) only brings the counts forward.
	calls0 := b.calls.Load()
	p0, err := b.progress(ctx)
	if err != nil {
		return err
	}
	mark := calls0 + int64(max(want-p0.succeeded, 0))
	last, lastAt := -1, time.Now()
	calls, callsAt := int64(-1), time.Now()
	done := false
	every.Do(wctx, benchPoll, true, func(context.Context) bool {
		if c := b.calls.Load(); c < mark {
			if c != calls {
				calls, callsAt = c, time.Now()
				last, lastAt = -1, time.Now() // progress: the stall clock starts again
			}
			if time.Since(callsAt) < benchQuiet {
				return true
			}
		}
		p, perr := b.progress(ctx)
		switch {
		case perr != nil:
			err = perr
		case p.dead > 0:
			err = fmt.Errorf("%d jobs ended dead (reasons: %s); no-op jobs should all succeed", p.dead, p.reasons)
		case p.succeeded >= want:
			done = true
			return false
		case p.succeeded != last:
			last, lastAt = p.succeeded, time.Now()
		case time.Since(lastAt) >= benchStall:
			err = fmt.Errorf("no job succeeded for %s: %d of %d succeeded", benchStall, p.succeeded, want)
		}
		return err == nil
	})
	switch {
	case err != nil:
		return err
	case done:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return fmt.Errorf("a worker stopped: %w", fleet.stop())
}
