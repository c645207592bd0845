package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/every"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/cmd/internal/cli"
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
		Short: "Show each kind's backlog, jobs in flight, dead jobs and circuit breaker",
		Long: `Show, for every kind in the namespace, its queue in the work stream, its dead jobs and its
circuit breaker:

  BACKLOG      jobs not yet delivered to a worker
  IN FLIGHT    jobs delivered and not yet acknowledged (running, or waiting to retry)
  REDELIVERED  jobs in flight that were delivered more than once
  RETRYING     keys waiting for their next attempt, from the Postgres ledger
  DEAD         jobs in the dead-letter queue
  OLDEST       age of the oldest job of the kind still in the work stream
  WORKERS      live workers of the kind
  BREAKER      the kind's circuit breaker: closed, open or half-open
  FAILED       failed calls of all calls in the breaker's window, and their rate
  NEXT TRIAL   when the breaker tries the downstream again: "in 1.4s" while open; "now"
               while half-open, with the trial calls out and those that succeeded
  SCHEDULED    jobs waiting in the Postgres ledger for their time (--delay, --at, periodic
               ticks; jobs published in a transaction, until relayed)

then one line per reason in the dead-letter queue. A kind that no worker serves (it has no
consumer and no live worker) is marked "orphan (no worker)": its jobs wait until a worker serves
it, or 'enqueue dlq capture-orphans' moves them to the dead-letter queue. A kind whose consumer
exists but whose workers are gone is marked "no live worker". Messages in the work stream
whose subject is no job's (no id token, tokens after the id, or a kind token that is no valid
kind) are counted on a line of their own, "stray messages": no kind's worker takes them, and
workers dead-letter the first two sorts as malformed.

The breaker is the fleet's: by default (breaker.scope: fleet) one per kind, shared by every
worker through the NATS bucket <NS>_BREAKERS, whose record gives the state and the next trial;
the window's counts are the fleet's as the live workers have heard them. For a kind whose
workers each keep their own (scope worker) the worst worker's breaker is shown. A kind whose
workers cannot reach the shared record, and decide alone meanwhile, is marked "N of M workers
cut off from the fleet's breaker".

Kinds are found from the work stream's consumers, the fleet registry, the jobs in the stream
and the dead-letter queue, and from the ledger's scheduled jobs. The queue's counts need only
NATS; SCHEDULED and RETRYING come from the ledger (--database-url) and show "-" without it (or
when Postgres cannot be reached: a warning says so). Counting reads the headers of every dead-letter entry and, when jobs of unserved kinds
wait, up to 100,000 of the work stream's subjects (a note says when that cap was reached).

With --watch, stats shows the numbers again every --interval until interrupted, redrawing the
screen on a terminal and printing one block after another otherwise. With --json it prints one
object (one per line with --watch) with the keys kinds, dlq, generated_at, scan_capped and
stray_messages; each
kind has kind, backlog, in_flight, redelivered, retrying, running, scheduled, dead,
oldest_age_seconds, consumers, workers and served (retrying, running and scheduled are null
without the ledger), and its
breaker: breaker (closed, open, half-open, or "" when unknown), breaker_scope (fleet or
worker), breaker_calls, breaker_failures, breaker_failure_rate (0 to 1), breaker_next_trial
(a time, null when closed), breaker_next_trial_seconds (0 unless open), breaker_trials and
breaker_trials_ok (half-open), breaker_since, breaker_reason and breaker_by (the shared
record's), and breaker_cut_off (workers deciding alone).

Exit codes: 0 ok (--watch: until interrupted), 1 error, 2 usage error.`,
		Example: `  enqueue stats
  enqueue stats --watch --interval 5s
  enqueue stats --json | jq '.kinds[] | select(.served | not)'
  enqueue stats --json | jq '.kinds[] | select(.breaker == "open") | {kind, breaker_next_trial}'
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
	c, lc, err := openAdmin(cmd.Context(), conn, clientNeeds{db: true, dbOptional: cmd.ErrOrStderr()}) // stats need only NATS
	if err != nil {
		return err
	}
	defer lc.Close()
	out := cmd.OutOrStdout()
	if !o.watch {
		s, err := c.Stats(ctx)
		if err != nil {
			return err
		}
		return printStats(out, s, o.json)
	}
	redraw := !o.json && cli.IsTerminal(out)
	var failed error // a write that failed ends the watch with its error
	every.Do(ctx, o.interval, true, func(ctx context.Context) bool {
		s, err := c.Stats(ctx)
		switch {
		case ctx.Err() != nil:
			return false // interrupted: the normal end of --watch
		case err != nil:
			// Keep watching: NATS may come back. The error goes where errors go.
			fmt.Fprintf(cmd.ErrOrStderr(), "enqueue: %v\n", err)
			return true
		}
		var b strings.Builder
		if redraw {
			b.WriteString(clearScreen)
		}
		if !o.json {
			fmt.Fprintf(&b, "namespace %s at %s, every %s\n\n", conn.Namespace, s.GeneratedAt.Local().Format("15:04:05"), o.interval)
		}
		if failed = printStats(&b, s, o.json); failed != nil {
			return false
		}
		if !o.json && !redraw {
			b.WriteString("\n")
		}
		_, failed = io.WriteString(out, b.String())
		return failed == nil
	})
	return failed
}

// printStats writes s as one JSON object, or as a table of kinds and the DLQ's reasons.
func printStats(w io.Writer, s *admin.Stats, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(s)
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tBACKLOG\tIN FLIGHT\tREDELIVERED\tRETRYING\tDEAD\tOLDEST\tWORKERS\tBREAKER\tFAILED\tNEXT TRIAL\tSCHEDULED\t")
	for _, k := range s.Kinds {
		retrying, scheduled := "-", "-"
		if k.Retrying != nil {
			retrying = fmt.Sprint(*k.Retrying)
		}
		if k.Scheduled != nil {
			scheduled = fmt.Sprint(*k.Scheduled)
		}
		var notes []string
		switch {
		case k.Orphan():
			notes = append(notes, "orphan (no worker)")
		case k.Workers == 0:
			notes = append(notes, "no live worker")
		}
		if k.Paused {
			notes = append(notes, "paused by "+printable(k.PausedBy))
		}
		if k.BreakerCutOff > 0 {
			notes = append(notes, fmt.Sprintf("%d of %s cut off from the fleet's breaker", k.BreakerCutOff, cli.Count(k.Workers, "worker")))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", k.Kind, k.Backlog, k.InFlight, k.Redelivered,
			retrying, k.Dead, formatAge(k.OldestAgeSeconds), k.Workers, cmp.Or(k.Breaker, "-"), breakerFailed(k),
			breakerNextTrial(k), scheduled, strings.Join(notes, "; "))
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

// breakerFailed writes the failures in a kind's breaker window: "3/4 (75%)", "-" without calls.
func breakerFailed(k admin.KindStats) string {
	if k.BreakerCalls == 0 {
		return "-"
	}
	return fmt.Sprintf("%d/%d (%.0f%%)", k.BreakerFailures, k.BreakerCalls, k.BreakerFailureRate*100)
}

// breakerNextTrial writes when a kind's breaker tries the downstream again: "in 1.4s" when
// open, "now" with the trial calls out and succeeded when half-open, "-" when closed.
func breakerNextTrial(k admin.KindStats) string {
	switch k.Breaker {
	case "open":
		return "in " + formatWait(k.BreakerNextTrialSeconds)
	case "half-open":
		if k.BreakerScope == "fleet" {
			return fmt.Sprintf("now (%d out, %d ok)", k.BreakerTrials, k.BreakerTrialsOK)
		}
		return "now"
	}
	return "-"
}

// formatWait writes a wait in seconds, rounded down: 0.0s, 1.4s, 59.9s, then as formatAge
// does (3m07s).
func formatWait(seconds float64) string {
	if seconds < 60 {
		return fmt.Sprintf("%.1fs", math.Floor(max(seconds, 0)*10)/10)
	}
	return formatAge(seconds)
}

// formatAge writes an age in seconds the way a person reads it: "-" for none, then 850ms, 42s,
// 3m07s, 5h12m, 3d04h.
func formatAge(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return age.Format(time.Duration(seconds * float64(time.Second)))
}
