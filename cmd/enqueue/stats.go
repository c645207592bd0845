package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
)

// statsOptions are stats's flags.
type statsOptions struct {
	json     bool
	watch    bool
	interval time.Duration
}

// clearScreen moves the cursor home and clears a terminal.
const clearScreen = "\x1b[H\x1b[2J"

func newStatsCmd(conn *cli.Connection) *cobra.Command {
	var o statsOptions
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Show each kind's backlog, jobs in flight and dead jobs",
		Long: `Show, for every kind in the namespace, its queue in the work stream and its dead jobs:

  BACKLOG      jobs not yet delivered to a worker
  IN FLIGHT    jobs delivered and not yet acknowledged (running, or waiting to retry)
  REDELIVERED  jobs in flight that were delivered more than once
  RETRYING     keys waiting for their next attempt, from the Postgres ledger
  DEAD         jobs in the dead-letter queue
  OLDEST       age of the oldest job of the kind still in the work stream
  WORKERS      live workers of the kind

then one line per reason in the dead-letter queue. A kind that no worker serves (it has no
consumer and no live worker) is marked "orphan (no worker)": its jobs wait until a worker serves
it, or 'enqueue dlq capture-orphans' moves them to the dead-letter queue. A kind whose consumer
exists but whose workers are gone is marked "no live worker". Messages in the work stream
whose subject is no job's (no id token, tokens after the id, or a kind token that is no valid
kind) are counted on a line of their own, "stray messages": no kind's worker takes them, and
workers dead-letter the first two sorts as malformed.

Kinds are found from the work stream's consumers, the fleet registry, the jobs in the stream
and the dead-letter queue. The queue's counts need only NATS; RETRYING comes from the ledger
(--database-url) and shows "-" without it (or when Postgres cannot be reached: a warning says
so). Counting reads the headers of every dead-letter entry and, when jobs of unserved kinds
wait, up to 100,000 of the work stream's subjects (a note says when that cap was reached).

With --watch, stats shows the numbers again every --interval until interrupted, redrawing the
screen on a terminal and printing one block after another otherwise. With --json it prints one
object (one per line with --watch) with the keys kinds, dlq, generated_at, scan_capped and
stray_messages; each
kind has kind, backlog, in_flight, redelivered, retrying, running, dead, oldest_age_seconds,
consumers, workers and served (retrying and running are null without the ledger).

Exit codes: 0 ok (--watch: until interrupted), 1 error, 2 usage error.`,
		Example: `  enqueue stats
  enqueue stats --watch --interval 5s
  enqueue stats --json | jq '.kinds[] | select(.served | not)'
  enqueue stats --database-url '' --namespace staging`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStats(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.json, "json", false, "print the numbers as JSON")
	fs.BoolVar(&o.watch, "watch", false, "show the numbers again every --interval until interrupted")
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "how often --watch refreshes, e.g. 5s")
	return cmd
}

func runStats(cmd *cobra.Command, conn *cli.Connection, o statsOptions) error {
	if o.interval <= 0 {
		return cli.Usagef("invalid --interval %s: give a positive duration such as 2s", o.interval)
	}
	if cmd.Flags().Changed("interval") && !o.watch {
		return cli.Usagef("--interval applies to --watch")
	}
	ctx := cmd.Context()
	c, err := statsClient(cmd, conn)
	if err != nil {
		return err
	}
	defer c.Close()
	out := cmd.OutOrStdout()
	if !o.watch {
		s, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		return printStats(out, s, o.json)
	}
	redraw := !o.json && cli.IsTerminal(out)
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		s, err := c.Stats(ctx)
		switch {
		case ctx.Err() != nil:
			return nil // interrupted: the normal end of --watch
		case err != nil:
			// Keep watching: NATS may come back. The error goes where errors go.
			fmt.Fprintf(cmd.ErrOrStderr(), "enqueue: %v\n", err)
		default:
			var b strings.Builder
			if redraw {
				b.WriteString(clearScreen)
			}
			if !o.json {
				fmt.Fprintf(&b, "namespace %s at %s, every %s\n\n", conn.Namespace, s.GeneratedAt.Local().Format("15:04:05"), o.interval)
			}
			if err := printStats(&b, s, o.json); err != nil {
				return err
			}
			if !o.json && !redraw {
				b.WriteString("\n")
			}
			if _, err := io.WriteString(out, b.String()); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// statsClient connects for stats. Stats need only NATS: when Postgres cannot be reached, it
// warns and goes on without the ledger's counts.
func statsClient(cmd *cobra.Command, conn *cli.Connection) (*levee.Client, error) {
	ctx := cmd.Context()
	natsOpts, err := conn.NATSOptions()
	if err != nil {
		return nil, err
	}
	cfg := levee.ClientConfig{NATSURL: conn.NATSURL, NATSOptions: natsOpts, DatabaseURL: conn.DatabaseURL, Namespace: conn.Namespace}
	c, err := levee.NewClient(ctx, cfg)
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		fmt.Fprintf(cmd.ErrOrStderr(), "enqueue: warning: %v; showing the queues without the ledger's counts\n", err)
		cfg.DatabaseURL = ""
		c, err = levee.NewClient(ctx, cfg)
	}
	if err != nil {
		return nil, cli.ConnectHint(err)
	}
	return c, nil
}

// printStats writes s as one JSON object, or as a table of kinds and the DLQ's reasons.
func printStats(w io.Writer, s *levee.Stats, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tBACKLOG\tIN FLIGHT\tREDELIVERED\tRETRYING\tDEAD\tOLDEST\tWORKERS\t")
	for _, k := range s.Kinds {
		retrying := "-"
		if k.Retrying != nil {
			retrying = fmt.Sprint(*k.Retrying)
		}
		note := ""
		switch {
		case k.Orphan():
			note = "orphan (no worker)"
		case k.Workers == 0:
			note = "no live worker"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%s\t%d\t%s\n", k.Kind, k.Backlog, k.InFlight, k.Redelivered,
			retrying, k.Dead, formatAge(k.OldestAgeSeconds), k.Workers, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	for line := range strings.Lines(table.String()) { // no padding after the last column
		b.WriteString(strings.TrimRight(line, " \n"))
		b.WriteString("\n")
	}
	if len(s.Kinds) == 0 {
		b.WriteString("(no kinds: no consumers, workers, jobs or dead jobs in this namespace)\n")
	}
	if s.ScanCapped {
		b.WriteString("note: over 100,000 jobs wait that no consumer accounts for; only the kinds among the first 100,000 are shown\n")
	}
	if s.StrayMessages > 0 {
		fmt.Fprintf(&b, "stray messages: %d (subject not <ns>.jobs.<kind>.<id>; workers dead-letter those without an id or with extra tokens as malformed)\n", s.StrayMessages)
	}
	fmt.Fprintf(&b, "\nDLQ: %d dead\n", s.DLQ.Total)
	reasons := make([]string, 0, len(s.DLQ.ByReason))
	for r := range s.DLQ.ByReason {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(x, y string) int {
		return cmp.Or(cmp.Compare(s.DLQ.ByReason[y], s.DLQ.ByReason[x]), cmp.Compare(x, y))
	})
	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range reasons {
		fmt.Fprintf(tw, "  %s\t%d\n", r, s.DLQ.ByReason[r])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// formatAge writes an age in seconds the way a person reads it: "-" for none, then 850ms, 42s,
// 3m07s, 5h12m, 3d04h.
func formatAge(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	d := time.Duration(seconds * float64(time.Second))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
