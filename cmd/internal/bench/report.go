package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/levee-dev/levee/cmd/internal/cli"
)

// Report is what a run measured; its JSON form is `enqueue bench --json`'s.
type Report struct {
	Mode      string `json:"mode"` // "burst", "steady" with --rate, "backlog" with --backlog, "scheduled" with --scheduled
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
	// SpreadS is --spread: the scheduled jobs' run_at were spread over it (--scheduled).
	SpreadS float64 `json:"spread_s,omitempty"`
	// DispatchSeconds is how long after the last run_at the dispatchers had published every
	// scheduled job, and DoneAfterDueS when the last one had succeeded (--scheduled).
	DispatchSeconds float64 `json:"dispatch_seconds,omitempty"`
	DoneAfterDueS   float64 `json:"done_after_due_seconds,omitempty"`

	PublishJobsPerSec float64 `json:"publish_jobs_per_sec"`
	WorkJobsPerSec    float64 `json:"work_jobs_per_sec"`
	E2EJobsPerSec     float64 `json:"e2e_jobs_per_sec"`
	// E2EPublishJobsPerSec is how fast the e2e jobs were published, with the workers running.
	E2EPublishJobsPerSec float64 `json:"e2e_publish_jobs_per_sec,omitempty"`
	LatencyMS            Latency `json:"latency_ms"`
	PGTxPerJob           float64 `json:"pg_tx_per_job"`

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
func (r *Report) round() {
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
	to(&r.DispatchSeconds, 3)
	to(&r.DoneAfterDueS, 3)
}

// Latency holds latency percentiles in milliseconds.
type Latency struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
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

// perSecond is n per d.
func perSecond(n int, d time.Duration) float64 {
	if d <= 0 {
		d = time.Microsecond
	}
	return float64(n) / d.Seconds()
}

// Print writes rep as the table `enqueue bench` prints.
func Print(w io.Writer, rep *Report) error {
	var buf bytes.Buffer
	workers := cli.Count(rep.Workers, "worker")
	switch rep.Mode {
	case "backlog":
		fmt.Fprintf(&buf, "Levee bench: a backlog of %d %s jobs (%d B payload), worked for %s by %s, concurrency %d\n",
			rep.Jobs, rep.Kind, rep.PayloadBytes, time.Duration(rep.DurationS*float64(time.Second)), workers, rep.Concurrency)
	case "scheduled":
		fmt.Fprintf(&buf, "Levee bench: %d scheduled %s jobs (%d B payload) due at one second (spread over %s), %s, concurrency %d\n",
			rep.Jobs, rep.Kind, rep.PayloadBytes, time.Duration(rep.SpreadS*float64(time.Second)), workers, rep.Concurrency)
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
	if rep.Mode == "scheduled" {
		return printScheduled(w, &buf, rep)
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
		if rep.E2EJobsPerSec > 0 {
			fmt.Fprintf(tw, "e2e\t%d\t%.2f\t%.0f\t%.2f\tfirst publish to last success; published at %.0f jobs/s meanwhile\n",
				rep.Jobs, rep.e2eSeconds, rep.E2EJobsPerSec, rep.E2ECPUSeconds, rep.E2EPublishJobsPerSec)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rep.Mode == "burst" && rep.E2EJobsPerSec == 0 { // --no-e2e: no latency measured
		fmt.Fprintf(&buf, "\nPostgres: %.3f transactions committed per job during the work phase (the whole database's count)\n", rep.PGTxPerJob)
		fmt.Fprintf(&buf, "peak RSS: %.1f MB (this process's: workers, the bench's polling, and the publisher)\n", rep.WorkerPeakRSSMB)
		_, err := w.Write(buf.Bytes())
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

// printBacklog finishes the text report of a --backlog run.
func printBacklog(w io.Writer, buf *bytes.Buffer, rep *Report) error {
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
