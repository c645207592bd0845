// Command benchcompare runs two benchmark commands that print one JSON object with enqueue
// bench's keys (by default `enqueue bench --json` and River's `riverbench --json`, from
// bench/river) back to back for several rounds, alternating which goes first, and prints each
// round's figures, the ratio of the first to the second, and the medians. `make bench-compare`
// builds both binaries and runs it; scripts/bench-durable.sh uses it to put two NATS settings
// side by side.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// figures are the keys both benches print with --json, and the CPU time each run cost.
type figures struct {
	Jobs              int     `json:"jobs"`
	Workers           int     `json:"workers"`
	PublishJobsPerSec float64 `json:"publish_jobs_per_sec"`
	WorkJobsPerSec    float64 `json:"work_jobs_per_sec"`
	E2EJobsPerSec     float64 `json:"e2e_jobs_per_sec"`
	LatencyMS         struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
	} `json:"latency_ms"`
	PGTxPerJob       float64 `json:"pg_tx_per_job"`
	WorkerCPUSeconds float64 `json:"worker_cpu_seconds"`
	WorkerPeakRSSMB  float64 `json:"worker_peak_rss_mb"`

	// CPU seconds of the run: the bench process (workers and publisher), and the Postgres and
	// NATS server processes of this machine (read from /proc; other clients count too).
	cpuBench, cpuPostgres, cpuNATS float64
}

// cpuPerJob is the machine CPU the run spent per job worked, in microseconds. Both benches
// publish and work 2 × jobs jobs (the work phase's backlog and the e2e jobs), or jobs with
// --no-e2e (no e2e rate).
func (f figures) cpuPerJob() (bench, postgres, nats, total float64) {
	n := float64(2 * max(f.Jobs, 1))
	if f.E2EJobsPerSec == 0 {
		n /= 2
	}
	bench, postgres, nats = f.cpuBench/n*1e6, f.cpuPostgres/n*1e6, f.cpuNATS/n*1e6
	return bench, postgres, nats, bench + postgres + nats
}

// labels name the two commands in the report; natsProcess is the NATS server's process name.
var (
	labels      = [2]string{"Levee", "River"}
	natsProcess = "nats-server"
)

type round struct {
	levee, river figures
}

func main() {
	var (
		rounds = flag.Int("rounds", 3, "rounds; each runs both, alternating which goes first")
		levee  = flag.String("levee", "bin/enqueue bench --json --jobs 20000", "the Levee command (its output: one JSON object)")
		river  = flag.String("river", "bench/river/bin/riverbench --json --jobs 20000", "the River command (its output: one JSON object)")
		names  = flag.String("names", "Levee,River", "the two commands' names in the report, comma-separated")
		natsPs = flag.String("nats-process", "nats-server", "process name of the NATS server, for its CPU time")
		pause  = flag.Duration("pause", 3*time.Second, "pause between runs, to let Postgres and NATS settle")
		out    = flag.String("json-out", "", "also write each round's figures, with the CPU per job, to this file as JSON (make bench-scale reads it)")
	)
	flag.Parse()
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "benchcompare: --rounds must be at least 1")
		os.Exit(2)
	}
	a, b, ok := strings.Cut(*names, ",")
	if !ok || a == "" || b == "" {
		fmt.Fprintf(os.Stderr, "benchcompare: invalid --names %q: give two names separated by a comma\n", *names)
		os.Exit(2)
	}
	labels = [2]string{a, b}
	natsProcess = *natsPs
	if err := run(context.Background(), os.Stdout, *rounds, strings.Fields(*levee), strings.Fields(*river), *pause, *out); err != nil {
		fmt.Fprintln(os.Stderr, "benchcompare:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, rounds int, leveeCmd, riverCmd []string, pause time.Duration, out string) error {
	var all []round
	for i := range rounds {
		var r round
		order := []string{"levee", "river"}
		if i%2 == 1 {
			order = []string{"river", "levee"}
		}
		for j, name := range order {
			if i > 0 || j > 0 {
				time.Sleep(pause)
			}
			cmd, dst := leveeCmd, &r.levee
			if name == "river" {
				cmd, dst = riverCmd, &r.river
			}
			fmt.Fprintf(os.Stderr, "round %d/%d: %s\n", i+1, rounds, strings.Join(cmd, " "))
			f, err := measure(ctx, cmd)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", i+1, name, err)
			}
			*dst = f
		}
		all = append(all, r)
	}
	report(w, all)
	if out != "" {
		return writeJSON(out, all)
	}
	return nil
}

// measured is one run's figures as --json-out writes them.
type measured struct {
	Jobs           int     `json:"jobs"`
	Workers        int     `json:"workers"`
	WorkJobsPerSec float64 `json:"work_jobs_per_sec"`
	E2EJobsPerSec  float64 `json:"e2e_jobs_per_sec"`
	P99MS          float64 `json:"p99_ms"`
	CPUBenchUS     float64 `json:"cpu_bench_us_per_job"`
	CPUPostgresUS  float64 `json:"cpu_postgres_us_per_job"`
	CPUNATSUS      float64 `json:"cpu_nats_us_per_job"`
	CPUTotalUS     float64 `json:"cpu_total_us_per_job"`
}

func measuredOf(f figures) measured {
	b, p, n, t := f.cpuPerJob()
	return measured{Jobs: f.Jobs, Workers: f.Workers, WorkJobsPerSec: f.WorkJobsPerSec, E2EJobsPerSec: f.E2EJobsPerSec,
		P99MS: f.LatencyMS.P99, CPUBenchUS: b, CPUPostgresUS: p, CPUNATSUS: n, CPUTotalUS: t}
}

// writeJSON writes the rounds to path: [{"levee": {...}, "river": {...}}, ...].
func writeJSON(path string, rounds []round) error {
	var rs []map[string]measured
	for _, r := range rounds {
		rs = append(rs, map[string]measured{"levee": measuredOf(r.levee), "river": measuredOf(r.river)})
	}
	raw, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

func measure(ctx context.Context, argv []string) (figures, error) {
	if len(argv) == 0 {
		return figures{}, errors.New("empty command")
	}
	var out, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	pg0, nats0 := serverCPU("postgres"), serverCPU(natsProcess)
	if err := cmd.Run(); err != nil {
		return figures{}, fmt.Errorf("%w: %s", err, lastLine(stderr.String()))
	}
	var f figures
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		return figures{}, fmt.Errorf("its output is not one JSON object (%w): %s", err, lastLine(out.String()))
	}
	f.cpuBench = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	f.cpuPostgres, f.cpuNATS = serverCPU("postgres")-pg0, serverCPU(natsProcess)-nats0
	return f, nil
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux platform Go
// runs on.
const clockTicks = 100

// serverCPU sums the CPU seconds of every process named comm, with the time of its exited
// children (a Postgres session ends within a run; the postmaster reaps it). 0 without /proc.
func serverCPU(comm string) float64 {
	dirs, _ := os.ReadDir("/proc")
	var ticks int64
	for _, d := range dirs {
		if d.Name()[0] < '0' || d.Name()[0] > '9' {
			continue
		}
		raw, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... field 14 utime, 15 stime, 16 cutime, 17 cstime
		open, end := bytes.IndexByte(raw, '('), bytes.LastIndexByte(raw, ')')
		if open < 0 || end < open || string(raw[open+1:end]) != comm {
			continue
		}
		fields := strings.Fields(string(raw[end+1:]))
		if len(fields) < 15 {
			continue
		}
		for _, f := range fields[11:15] { // after ")": state is field 3, so utime (14) is index 11
			n, _ := strconv.ParseInt(f, 10, 64)
			ticks += n
		}
	}
	return float64(ticks) / clockTicks
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func report(w io.Writer, rounds []round) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	a, b := labels[0], labels[1]
	fmt.Fprintf(tw, "round\t%[1]s e2e/s\t%[2]s e2e/s\te2e ratio\t%[1]s work/s\t%[2]s work/s\twork ratio\t%[1]s p99 ms\t%[2]s p99 ms\t%[1]s tx/job\t%[2]s tx/job\t%[1]s RSS MB\t%[2]s RSS MB\t%[1]s CPU µs/job\t%[2]s CPU µs/job\t\n", a, b)
	var e2e, work, le, re, lw, rw, lc, rc []float64
	for i, r := range rounds {
		er, wr := ratio(r.levee.E2EJobsPerSec, r.river.E2EJobsPerSec), ratio(r.levee.WorkJobsPerSec, r.river.WorkJobsPerSec)
		e2e, work = append(e2e, er), append(work, wr)
		le, re = append(le, r.levee.E2EJobsPerSec), append(re, r.river.E2EJobsPerSec)
		lw, rw = append(lw, r.levee.WorkJobsPerSec), append(rw, r.river.WorkJobsPerSec)
		_, _, _, lcpu := r.levee.cpuPerJob()
		_, _, _, rcpu := r.river.cpuPerJob()
		lc, rc = append(lc, lcpu), append(rc, rcpu)
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.2f\t%.0f\t%.0f\t%.2f\t%.0f\t%.0f\t%.3f\t%.3f\t%.0f\t%.0f\t%.0f\t%.0f\t\n", i+1,
			r.levee.E2EJobsPerSec, r.river.E2EJobsPerSec, er, r.levee.WorkJobsPerSec, r.river.WorkJobsPerSec, wr,
			r.levee.LatencyMS.P99, r.river.LatencyMS.P99, r.levee.PGTxPerJob, r.river.PGTxPerJob,
			r.levee.WorkerPeakRSSMB, r.river.WorkerPeakRSSMB, lcpu, rcpu)
	}
	fmt.Fprintf(tw, "median\t%.0f\t%.0f\t%.2f\t%.0f\t%.0f\t%.2f\t\t\t\t\t\t\t%.0f\t%.0f\t\n", median(le), median(re), median(e2e), median(lw), median(rw), median(work), median(lc), median(rc))
	_ = tw.Flush()
	if median(le) == 0 && median(re) == 0 { // --no-e2e
		fmt.Fprintf(w, "\n%s/%s, working a backlog: %.2f (median of %d rounds; no e2e phase)\n", a, b, median(work), len(rounds))
	} else {
		fmt.Fprintf(w, "\n%s/%s, end to end: %.2f (median of %d rounds); working a backlog: %.2f\n", a, b, median(e2e), len(rounds), median(work))
	}
	lb, lp, ln, _ := rounds[len(rounds)-1].levee.cpuPerJob()
	rb, rp, rn, _ := rounds[len(rounds)-1].river.cpuPerJob()
	fmt.Fprintf(w, "CPU per job (last round, µs; Postgres and NATS include any other client of theirs):\n"+
		"  %s: bench process %.0f, Postgres %.0f, NATS %.0f\n  %s: bench process %.0f, Postgres %.0f, NATS %.0f\n",
		a, lb, lp, ln, b, rb, rp, rn)
}
