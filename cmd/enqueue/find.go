package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/leveetype"
)

// findOptions are find's flags.
type findOptions struct {
	json bool
}

func newFindCmd(conn *cli.Connection) *cobra.Command {
	var o findOptions
	cmd := &cobra.Command{
		Use:   "find ID-OR-KEY",
		Short: "Find a job by id, or the jobs of an idempotency key",
		Long: `Find the job whose id is ID-OR-KEY (waiting in the stream, or in the ledger); if there is
none, the jobs that used ID-OR-KEY as their idempotency key, in every kind, newest first: the
key's owner and the jobs recorded as its duplicates. Each is printed as 'status' prints it,
with a blank line between them; then its attempts, oldest first, with their errors.

With --json, it prints one JSON object per line, each as 'status --json' prints it, with an
"timeline" array of its attempts added (n, started_at, finished_at, outcome, error, worker).

` + findExitCodes,
		Example: `  enqueue find 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue find order-4711
  enqueue find order-4711 --json | jq -r '.id + " " + .state'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runFind(cmd, conn, o, args[0])
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON Lines")
	return cmd
}

// foundJob is one line of find --json: the job's status and its attempts.
type foundJob struct {
	levee.JobStatus
	Timeline []leveetype.Attempt `json:"timeline"`
}

func runFind(cmd *cobra.Command, conn *cli.Connection, o findOptions, idOrKey string) error {
	if idOrKey == "" {
		return cli.Usagef("give a job id or an idempotency key")
	}
	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, operatorNeeds)
	if err != nil {
		return err
	}
	defer lc.Close()
	jobs, err := c.JobFind(ctx, idOrKey)
	if err != nil {
		return operatorError(err)
	}
	out := cmd.OutOrStdout()
	now := time.Now()
	for i := range jobs {
		j := &jobs[i]
		atts, err := c.JobAttempts(ctx, j.ID)
		if err != nil {
			return operatorError(err)
		}
		if o.json {
			if err := jsonLine(out, foundJob{JobStatus: *j, Timeline: atts}); err != nil {
				return err
			}
			continue
		}
		if i > 0 {
			fmt.Fprintln(out)
		}
		if err := printStatus(out, j, false, now); err != nil {
			return err
		}
		for _, a := range atts {
			if a.Outcome == "replayed" { // the attempts above are the job's life before a replay
				fmt.Fprintf(out, "  replayed   %s  by %s; attempts count again from 1\n", a.StartedAt.Local().Format("2006-01-02 15:04:05.000"),
					printable(cmp.Or(a.Worker, "an operator")))
				continue
			}
			fmt.Fprintf(out, "  attempt %d  %s  %s  %s  %s\n", a.N, a.StartedAt.Local().Format("2006-01-02 15:04:05.000"),
				a.Outcome, printable(a.Worker), oneLineTruncated(a.Error, lastErrorWidth))
		}
	}
	return nil
}

func jsonLine(w io.Writer, v any) error { return json.NewEncoder(w).Encode(v) }
