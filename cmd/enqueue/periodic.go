package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/leveetype"
)

const periodicExitCodes = `Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable
  2  usage error
  3  no periodic job of that name`

func newPeriodicCmd(conn *cli.Connection) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "periodic",
		Short: "List, pause and resume periodic jobs",
		Long: `Periodic jobs are declared under "periodic:" in the worker's config (or with Worker.Periodic
in Go); each worker writes its entries to the ledger when it starts, and every worker's
dispatcher enqueues each tick once across the fleet, with the idempotency key
periodic:<name>:<tick>. A worker whose config lacks an entry never deletes it.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newPeriodicListCmd(conn), newPeriodicPauseCmd(conn, true), newPeriodicPauseCmd(conn, false),
		newPeriodicDeleteCmd(conn))
	return cmd
}

func newPeriodicDeleteCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "delete NAME",
		Short: "Remove a periodic job from the ledger",
		Long: `Remove the periodic job NAME from the ledger: no tick of it is enqueued any more (runs that
were enqueued already stay scheduled: 'enqueue jobs --state scheduled' lists them). Workers
never delete an entry their config lacks, so this is how one goes away; a worker that starts
with the entry in its config writes it again, so take it out of every config first. Audited
with --as.

` + periodicExitCodes,
		Example: "  enqueue periodic delete nightly-settlement --as ada",
	}, conn, leveetype.ValidatePeriodicName, "deleted", (*admin.Client).PeriodicDelete)
}

func newPeriodicListCmd(conn *cli.Connection) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List periodic jobs: name, kind, schedule, last run, next run, paused",
		Long: `List the periodic jobs the ledger holds, by name: kind, schedule, catch-up policy, the last
tick enqueued, the next one and whether it is paused. With --json, one JSON object per line.

` + listExitCodes,
		Example: `  enqueue periodic list
  enqueue periodic list --json | jq -r 'select(.paused) | .name'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			c, lc, err := openAdmin(ctx, conn, operatorNeeds)
			if err != nil {
				return err
			}
			defer lc.Close()
			entries, err := c.PeriodicList(ctx)
			if err != nil {
				return operatorError(err)
			}
			return printPeriodic(cmd.OutOrStdout(), entries, asJSON, time.Now())
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON Lines")
	return cmd
}

func printPeriodic(out io.Writer, entries []admin.PeriodicEntry, asJSON bool, now time.Time) error {
	if asJSON {
		enc := json.NewEncoder(out)
		for _, e := range entries {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKIND\tSCHEDULE\tCATCH UP\tLAST RUN\tNEXT RUN\tPAUSED")
	for _, e := range entries {
		last := "never"
		if e.LastRun != nil {
			last = e.LastRun.Format(time.RFC3339) + " (" + age.Format(now.Sub(*e.LastRun)) + " ago)"
		}
		next := e.NextRun.Format(time.RFC3339)
		switch {
		case e.Paused:
			next = "-"
		case e.NextRun.After(now):
			next += " (in " + age.Format(e.NextRun.Sub(now)) + ")"
		default:
			next += " (due)"
		}
		paused := "no"
		if e.Paused {
			paused = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Schedule, e.CatchUp, last, next, paused)
	}
	if len(entries) == 0 {
		fmt.Fprintln(tw, "(no periodic jobs: declare them under \"periodic:\" in a worker's config)")
	}
	return tw.Flush()
}

func newPeriodicPauseCmd(conn *cli.Connection, pause bool) *cobra.Command {
	use, short, long, done := "pause NAME", "Stop a periodic job from enqueueing ticks, until resume",
		`Pause the periodic job NAME across the fleet: no tick of it is enqueued until
'enqueue periodic resume NAME'. Jobs of ticks enqueued before are not affected. The pause is
kept in the ledger, so workers that start meanwhile keep it. Audited with --as.`, "paused"
	act := (*admin.Client).PeriodicPause
	if !pause {
		use, short, long, done = "resume NAME", "Let a paused periodic job enqueue ticks again",
			`Resume the periodic job NAME: its next tick is the first after now (stderr says when); the
ticks due while it was paused do not run. Audited with --as.`, "resumed"
		act = (*admin.Client).PeriodicResume
	}
	return actionCmd(&cobra.Command{
		Use:     use,
		Short:   short,
		Long:    long + "\n\n" + periodicExitCodes,
		Example: "  enqueue periodic " + strings.TrimSuffix(use, " NAME") + " nightly-settlement --as ada",
	}, conn, leveetype.ValidatePeriodicName, done, func(c *admin.Client, ctx context.Context, name string, by leveetype.Actor) error {
		e, err := act(c, ctx, name, by)
		if err == nil && !e.Paused {
			fmt.Fprintf(stderrOf(ctx), "next run %s\n", e.NextRun.Format(time.RFC3339))
		}
		return err
	})
}
