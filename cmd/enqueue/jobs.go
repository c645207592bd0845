package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/queue"
)

// jobsOptions are jobs's flags.
type jobsOptions struct {
	state  string
	kind   string
	since  string
	limit  int
	cursor string
	json   bool
}

func newJobsCmd(conn *cli.Connection) *cobra.Command {
	var o jobsOptions
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "List jobs from the ledger, newest first",
		Long: `List the jobs of the Postgres ledger, newest first by enqueued time: one line each with its id,
kind, state, attempts, age and reason or last error. Queued jobs wait in NATS, not in the
ledger: 'enqueue stats' counts them, 'enqueue status ID' finds one.

Scheduled jobs (published with --delay or --at, periodic ticks, and jobs published in a
transaction until a worker relays them) wait in the ledger too: they are listed with the
others, placed by when they were published, with when they run. --state scheduled lists only
them, soonest due first, with their key, run_at (RFC 3339, UTC) and age; --since then bounds
when they were published.

The listing pages by cursor (never by offset, never with a count over the ledger): when more
jobs match than --limit, a note on stderr gives the --cursor of the next page (a cursor
continues the listing it came from: the same --state).

With --json, it prints one JSON object per line, each as 'status --json' prints it ("run_at"
is set for a scheduled job).

` + listExitCodes,
		Example: `  enqueue jobs
  enqueue jobs --state dead --kind charge --since 1h
  enqueue jobs --state scheduled --kind reminder
  enqueue jobs --state retrying --json | jq -r .id
  enqueue jobs --limit 500 --cursor MTc2NDI2...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJobs(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.state, "state", "", "only jobs in this state: scheduled, running, retrying, succeeded or dead")
	fs.StringVar(&o.kind, "kind", "", "only jobs of this kind")
	fs.StringVar(&o.since, "since", "", "only jobs enqueued within the last DURATION, e.g. 1h or 7d")
	fs.IntVar(&o.limit, "limit", admin.DefaultJobsLimit, fmt.Sprintf("at most this many jobs (1 to %d)", admin.MaxJobsLimit))
	fs.StringVar(&o.cursor, "cursor", "", "continue a listing where the previous one stopped")
	fs.BoolVar(&o.json, "json", false, "print JSON Lines")
	return cmd
}

func runJobs(cmd *cobra.Command, conn *cli.Connection, o jobsOptions) error {
	f := admin.JobListParams{State: levee.State(o.state), Kind: o.kind, Limit: o.limit, Cursor: o.cursor}
	if o.kind != "" {
		if err := queue.ValidateKind(o.kind); err != nil {
			return cli.Usagef("invalid --kind: %w", err)
		}
	}
	if o.limit < 1 || o.limit > admin.MaxJobsLimit {
		return cli.Usagef("invalid --limit %d: give 1 to %d", o.limit, admin.MaxJobsLimit)
	}
	now := time.Now()
	if o.since != "" {
		d, err := age.Parse(o.since)
		if err != nil {
			return cli.Usagef("invalid --since %q: %w", o.since, err)
		}
		f.Since = now.Add(-d)
	}
	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, operatorNeeds)
	if err != nil {
		return err
	}
	defer lc.Close()
	page, err := c.JobList(ctx, f)
	if err != nil {
		return operatorError(err)
	}
	out := cmd.OutOrStdout()
	switch {
	case o.json:
		enc := json.NewEncoder(out)
		for _, j := range page.Jobs {
			if err := enc.Encode(j); err != nil {
				return err
			}
		}
	case f.State == levee.StateScheduled:
		if err := printScheduledJobs(out, page.Jobs, now); err != nil {
			return err
		}
	default:
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tKIND\tSTATE\tATTEMPTS\tAGE\tREASON / LAST ERROR")
		for _, j := range page.Jobs {
			note := j.Reason
			if j.RunAt != nil {
				note = "runs at " + runAtText(*j.RunAt, now)
			}
			if j.LastError != "" {
				note = joinNote(note, j.LastError)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", j.ID, j.Kind, j.State, j.Attempts, ageOf(j.EnqueuedAt, now), oneLineTruncated(note, lastErrorWidth))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if page.Next != "" {
		fmt.Fprintf(cmd.ErrOrStderr(), "more jobs match: add --cursor %s for the next page\n", page.Next)
	}
	return nil
}

// keyWidth is how much of an idempotency key the scheduled jobs' table shows.
const keyWidth = 40

// printScheduledJobs writes the table of `jobs --state scheduled`: each job's id, kind, key,
// when it runs and how long ago it was published, and why its publishes failed if they did.
func printScheduledJobs(w io.Writer, jobs []levee.JobStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tKEY\tRUN AT\tAGE\tLAST ERROR")
	for _, j := range jobs {
		runAt := "-"
		if j.RunAt != nil {
			runAt = runAtText(*j.RunAt, now)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Kind, oneLineTruncated(j.Key, keyWidth), runAt,
			ageOf(j.EnqueuedAt, now), oneLineTruncated(j.LastError, lastErrorWidth))
	}
	return tw.Flush()
}

// ageOf is how long ago t was ("" for nil).
func ageOf(t *time.Time, now time.Time) string {
	if t == nil {
		return ""
	}
	return age.Format(now.Sub(*t))
}

func joinNote(a, b string) string {
	if a == "" {
		return b
	}
	return a + ": " + b
}
