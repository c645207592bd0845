package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/idempotency"
)

// scheduledChunk is how many scheduled jobs one insert writes.
const scheduledChunk = 5000

// runScheduled measures the dispatchers (design rule 42): it stores Scheduled jobs in the
// ledger, all due at the same second T (or, with Spread, at times spread evenly over
// [T, T+Spread)), with the workers running, and reports how long after T the last one was
// published and succeeded, and how late each was claimed.
func (b *bench) runScheduled(ctx context.Context) (*Report, error) {
	n := b.o.Scheduled
	rep := b.report("scheduled", n)
	rep.SpreadS = b.o.Spread.Seconds()
	fleet, err := b.startFleet(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = fleet.stop() }()
	if err := fleet.ready(ctx); err != nil {
		return nil, err
	}
	// Stored far ahead, then made due at T in one statement: the insert's own time does not
	// count, and every job is due at once.
	b.note("storing %d scheduled jobs", n)
	ob := idempotency.NewOutbox(b.ns)
	far := time.Now().Add(time.Hour)
	offsets := make(map[string]time.Duration, n) // each job's run_at - T
	start := time.Now()
	for done := 0; done < n; {
		rows := make([]idempotency.ScheduledJob, min(scheduledChunk, n-done))
		for i := range rows {
			id := ulid.Make().String()
			rows[i] = idempotency.ScheduledJob{ID: id, Kind: b.o.Kind, Key: id, Payload: b.payload, RunAt: far, Origin: idempotency.OriginDelay}
			if b.o.Spread > 0 {
				offsets[id] = time.Duration(float64(b.o.Spread) * float64(done+i) / float64(n))
			}
		}
		b.statements++
		if _, err := ob.Insert(ctx, b.pool, rows); err != nil {
			return nil, err
		}
		done += len(rows)
	}
	rep.publishSeconds = time.Since(start).Seconds()
	rep.PublishJobsPerSec = perSecond(n, time.Since(start))

	tx0, err := b.commits(ctx)
	if err != nil {
		return nil, err
	}
	u0 := readUsage()
	// T is a second ahead on the database's clock; a spread run sets each job's own time.
	var dueAt time.Time
	b.statements++
	if err := b.pool.QueryRow(ctx, `SELECT date_trunc('second', now()) + interval '2 seconds'`).Scan(&dueAt); err != nil {
		return nil, fmt.Errorf("read the database clock: %w", err)
	}
	table := pgx.Identifier{b.ns}.Sanitize() + ".scheduled"
	ids, secs := make([]string, 0, len(offsets)), make([]float64, 0, len(offsets))
	for id, off := range offsets {
		ids, secs = append(ids, id), append(secs, off.Seconds())
	}
	b.statements++
	if _, err := b.pool.Exec(ctx, `UPDATE `+table+` AS s SET run_at = $1::timestamptz + make_interval(secs => coalesce(o.secs, 0))
FROM `+table+` AS t LEFT JOIN unnest($2::text[], $3::float8[]) AS o(id, secs) ON o.id = t.id
WHERE s.id = t.id`, dueAt, ids, secs); err != nil {
		return nil, fmt.Errorf("make the scheduled jobs due: %w", err)
	}
	b.statements++
	if _, err := b.pool.Exec(ctx, `SELECT pg_notify($1, '')`, idempotency.DueChannel(b.ns)); err != nil {
		return nil, err
	}
	b.note("%d jobs due at %s over %s, with %s", n, dueAt.Format(time.RFC3339), b.o.Spread, cli.Count(b.o.Workers, "worker"))

	// The last publish is when the table is empty, polled; the last success from the ledger.
	var published time.Time
	for published.IsZero() {
		var left int
		b.statements++
		if err := b.pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&left); err != nil {
			return nil, fmt.Errorf("count scheduled jobs: %w", err)
		}
		if left == 0 {
			b.statements++
			if err := b.pool.QueryRow(ctx, `SELECT now()`).Scan(&published); err != nil {
				return nil, err
			}
			break
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return nil, err
		}
		select {
		case <-fleet.failed():
			return nil, fmt.Errorf("a worker stopped: %w", fleet.stop())
		default:
		}
	}
	if err := b.waitSucceeded(ctx, fleet, n); err != nil {
		return nil, err
	}
	if err := fleet.stop(); err != nil {
		return nil, err
	}
	rep.WorkerCPUSeconds = readUsage().cpu.Sub(u0.cpu)
	tx1, err := b.settledCommits(ctx)
	if err != nil {
		return nil, err
	}
	rep.PGTxPerJob = float64(tx1-tx0) / float64(n)
	_, last, err := b.window(ctx)
	if err != nil {
		return nil, err
	}
	dueEnd := dueAt.Add(b.o.Spread)
	rep.DispatchSeconds = max(published.Sub(dueEnd), 0).Seconds()
	rep.e2eSeconds = last.Sub(dueAt).Seconds()
	rep.DoneAfterDueS = max(last.Sub(dueEnd), 0).Seconds()
	rep.E2EJobsPerSec = perSecond(n, last.Sub(dueAt))
	rep.LatencyMS, err = b.lateness(ctx, dueAt, offsets)
	return rep, err
}

// lateness returns the percentiles of how late each job was claimed by a worker: its first
// claim less its run_at, both on the database's clock. At a steady flow this is the
// dispatcher's lateness plus a claim's round trip; with every job due at once it is mostly
// the workers' queue.
func (b *bench) lateness(ctx context.Context, dueAt time.Time, offsets map[string]time.Duration) (Latency, error) {
	b.statements++
	rows, err := b.pool.Query(ctx, `SELECT job_id, started_at FROM `+pgx.Identifier{b.ns}.Sanitize()+`.keys WHERE kind = $1`, b.o.Kind)
	if err != nil {
		return Latency{}, fmt.Errorf("read claim times: %w", err)
	}
	var id string
	var at time.Time
	var ms []float64
	if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		ms = append(ms, float64(at.Sub(dueAt.Add(offsets[id])))/float64(time.Millisecond))
		return nil
	}); err != nil {
		return Latency{}, fmt.Errorf("read claim times: %w", err)
	}
	if len(ms) == 0 {
		return Latency{}, nil
	}
	slices.Sort(ms)
	q := func(p float64) float64 { return ms[min(len(ms)-1, int(p*float64(len(ms))))] }
	return Latency{P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: ms[len(ms)-1]}, nil
}

// printScheduled prints a --scheduled run.
func printScheduled(w io.Writer, buf *bytes.Buffer, rep *Report) error {
	fmt.Fprintf(buf, "stored in the ledger   %d jobs in %.2fs (%.0f jobs/s)\n", rep.Jobs, rep.publishSeconds, rep.PublishJobsPerSec)
	fmt.Fprintf(buf, "all published          %.3fs after the last run_at\n", rep.DispatchSeconds)
	fmt.Fprintf(buf, "all succeeded          %.3fs after the last run_at (%.0f jobs/s from the first run_at)\n", rep.DoneAfterDueS, rep.E2EJobsPerSec)
	fmt.Fprintf(buf, "claim lateness (ms)    p50 %.2f  p90 %.2f  p99 %.2f  max %.2f  (first claim less run_at)\n",
		rep.LatencyMS.P50, rep.LatencyMS.P90, rep.LatencyMS.P99, rep.LatencyMS.Max)
	fmt.Fprintf(buf, "Postgres               %.3f transactions per job; CPU of this process %.2fs\n", rep.PGTxPerJob, rep.WorkerCPUSeconds)
	_, err := w.Write(buf.Bytes())
	return err
}
