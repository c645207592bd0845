package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

func newDLQCmd(conn *cli.Connection) *cobra.Command {
	dlq := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge the dead-letter queue",
		Long: `A job that cannot succeed is moved to the dead-letter queue (the stream <NAMESPACE>_DLQ) with
its reason: permanent_error, max_attempts, max_deliveries, malformed, url_not_allowed,
key_reused_with_different_payload, no_handler or cancelled (enqueue cancel). Its payload, headers, attempts, last error
and failure times are kept there until it is replayed or purged.

  list             one line per dead job, or JSON Lines with --json
  show             everything about one dead job, payload included
  replay           put dead jobs back to work with a fresh attempt budget (needs Postgres too)
  purge            remove dead jobs for good
  capture-orphans  move the waiting jobs of a kind no worker serves here (reason no_handler)

list, replay --all and purge --all select jobs with --kind, --reason, --since (died within
the last DURATION) and --older-than (died longer ago than DURATION). A DURATION is a Go
duration such as 90s, 15m or 1h30m, or a number of days: 30d (or 1d12h).

Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable, or a job that could not be replayed or purged
  2  usage error: bad flag, filter, duration or rate; IDs together with --all, or neither
  3  a job id that is not in the dead-letter queue`,
		Example: `  enqueue dlq list --since 1h
  enqueue dlq list --kind charge --reason max_attempts --json | jq -r .id
  enqueue dlq show 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue dlq replay 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue dlq replay --all --kind charge --reason max_attempts --rate 50/s
  enqueue dlq purge --all --older-than 30d --yes`,
	}
	dlq.AddCommand(newDLQListCmd(conn), newDLQShowCmd(conn), newDLQReplayCmd(conn), newDLQPurgeCmd(conn))
	dlq.AddCommand(newDLQCaptureOrphansCmd(conn))
	return dlq
}

// filterFlags are the flags that select dead jobs: list's, and replay's and purge's with --all.
type filterFlags struct {
	kind      string
	reason    string
	since     string
	olderThan string
}

func (f *filterFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&f.kind, "kind", "", "only jobs of this kind")
	fs.StringVar(&f.reason, "reason", "", "only jobs dead for this reason, e.g. permanent_error or max_attempts")
	fs.StringVar(&f.since, "since", "", "only jobs that died within the last DURATION, e.g. 1h or 7d")
	fs.StringVar(&f.olderThan, "older-than", "", "only jobs that died longer ago than DURATION, e.g. 30d")
}

// set reports whether any filter was given.
func (f *filterFlags) set() bool {
	return f.kind != "" || f.reason != "" || f.since != "" || f.olderThan != ""
}

// filter checks the flags and returns the filter they mean at now, or a usage error.
func (f *filterFlags) filter(now time.Time) (admin.DeadJobListParams, error) {
	out := admin.DeadJobListParams{Kind: f.kind, Reason: f.reason}
	if f.kind != "" {
		if err := queue.ValidateKind(f.kind); err != nil {
			return out, cli.Usagef("invalid --kind: %w", err)
		}
	}
	if f.reason != "" {
		if err := executor.CheckReason(f.reason); err != nil {
			return out, cli.Usagef("invalid --reason: %w", err)
		}
	}
	var since, older time.Duration
	if f.since != "" {
		d, err := age.Parse(f.since)
		if err != nil {
			return out, cli.Usagef("invalid --since %q: %w", f.since, err)
		}
		since, out.Since = d, now.Add(-d)
	}
	if f.olderThan != "" {
		d, err := age.Parse(f.olderThan)
		if err != nil {
			return out, cli.Usagef("invalid --older-than %q: %w", f.olderThan, err)
		}
		older, out.Before = d, now.Add(-d)
	}
	if since > 0 && older > 0 && since <= older {
		return out, cli.Usagef("--since %s and --older-than %s select nothing: --since must be the longer one", f.since, f.olderThan)
	}
	return out, nil
}

// selectionFlags pick the jobs of replay and purge: IDs, or --all with the filter flags.
type selectionFlags struct {
	all    bool
	filter filterFlags
}

func (s *selectionFlags) add(fs *pflag.FlagSet, verb string) {
	fs.BoolVar(&s.all, "all", false, verb+" every dead job the filters select (every one, without a filter) instead of IDs")
	s.filter.add(fs)
}

// check validates ids against the flags: exactly one of IDs or --all, filters only with --all.
func (s *selectionFlags) check(ids []string) error {
	switch {
	case len(ids) > 0 && s.all:
		return cli.Usagef("give job IDs or --all, not both")
	case len(ids) == 0 && !s.all:
		return cli.Usagef("give the IDs of dead jobs, or --all (with --kind, --reason, --since or --older-than to narrow it)")
	case len(ids) > 0 && s.filter.set():
		return cli.Usagef("--kind, --reason, --since and --older-than select jobs for --all; with IDs, leave them out")
	}
	for _, id := range ids {
		if err := queue.ValidateID(id); err != nil {
			return &cli.UsageError{Err: err}
		}
	}
	return nil
}

// selection is what a replay or purge acts on.
type selection struct {
	jobs []leveetype.DeadJob
	// unknown are the given ids that are not in the dead-letter queue.
	unknown []string
	// partial means jobs hold no payload or headers (--all keeps memory small); read each job
	// again with Client.DeadJob before using them.
	partial bool
}

// selectJobs finds the jobs named by ids, or with all those matching f, oldest first. Unknown
// ids are collected, not errors. Repeated ids count once.
// selectAndReport selects the jobs of a replay or purge and reports the unknown ids on
// stderr. It returns a nil selection (and no error) when --all matched nothing.
func selectAndReport(cmd *cobra.Command, c *admin.Client, ids []string, all bool, f admin.DeadJobListParams) (*selection, error) {
	sel, err := selectJobs(cmd.Context(), c, ids, all, f)
	if err != nil {
		return nil, err
	}
	stderr := cmd.ErrOrStderr()
	for _, id := range sel.unknown {
		fmt.Fprintf(stderr, "enqueue: %v\n", notInDLQ(id))
	}
	if all && len(sel.jobs) == 0 {
		fmt.Fprintln(stderr, "no dead jobs match")
		return nil, nil
	}
	return sel, nil
}

func selectJobs(ctx context.Context, c *admin.Client, ids []string, all bool, f admin.DeadJobListParams) (*selection, error) {
	sel := &selection{}
	if all {
		sel.partial = true
		seen := map[string]bool{}
		for dj, err := range c.DeadJobList(ctx, f) {
			if err != nil {
				return nil, fmt.Errorf("read the dead-letter queue: %w", err)
			}
			if seen[dj.ID] {
				continue
			}
			seen[dj.ID] = true
			dj.Payload, dj.Headers = nil, nil
			sel.jobs = append(sel.jobs, dj)
		}
		return sel, nil
	}
	for _, id := range ids {
		if slices.ContainsFunc(sel.jobs, func(dj leveetype.DeadJob) bool { return dj.ID == id }) || slices.Contains(sel.unknown, id) {
			continue
		}
		dj, err := c.DeadJobGet(ctx, id)
		switch {
		case errors.Is(err, levee.ErrJobNotFound):
			sel.unknown = append(sel.unknown, id)
		case err != nil:
			return nil, fmt.Errorf("read dead job %s: %w", id, err)
		default:
			sel.jobs = append(sel.jobs, *dj)
		}
	}
	return sel, nil
}

// notInDLQ is the message for a job id the dead-letter queue does not hold.
func notInDLQ(id string) error {
	return fmt.Errorf("job %s is not in the dead-letter queue", id)
}

// outcome turns a replay's or purge's counts into its exit code: 1 if any job failed, else 3
// if any id was unknown.
func outcome(failed, unknown int) error {
	switch {
	case failed > 0:
		return &cli.ExitCodeError{Code: cli.ExitError}
	case unknown > 0:
		return &cli.ExitCodeError{Code: exitNotFound}
	}
	return nil
}

// reporter writes the per-job lines of a replay or purge, around a progress bar on a terminal
// (nil otherwise): the bar is cleared before each line and drawn again by the next step.
type reporter struct {
	stdout, stderr io.Writer
	bar            *progressbar.ProgressBar
}

// newReporter shows a progress bar on stderr when it is a terminal and there are more than one
// of n jobs.
func newReporter(stdout, stderr io.Writer, n int, what string) *reporter {
	r := &reporter{stdout: stdout, stderr: stderr}
	if n > 1 && cli.IsTerminal(stderr) {
		r.bar = progressbar.NewOptions(n,
			progressbar.OptionSetWriter(stderr),
			progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("jobs"),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
		)
	}
	return r
}

func (r *reporter) clear() {
	if r.bar != nil {
		_ = r.bar.Clear()
	}
}

// out writes one line to stdout.
func (r *reporter) out(format string, args ...any) {
	r.clear()
	fmt.Fprintf(r.stdout, format+"\n", args...)
}

// note writes one line to stderr.
func (r *reporter) note(format string, args ...any) {
	r.clear()
	fmt.Fprintf(r.stderr, format+"\n", args...)
}

// step counts one job done.
func (r *reporter) step() {
	if r.bar != nil {
		_ = r.bar.Add(1)
	}
}

// finish removes the bar.
func (r *reporter) finish() {
	if r.bar != nil {
		_ = r.bar.Finish()
	}
}
