package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

func newBreakerCmd(conn *cli.Connection) *cobra.Command {
	breaker := &cobra.Command{
		Use:   "breaker",
		Short: "Operate the circuit breakers of a kind",
		Long: `A kind's circuit breaker stops the kind's pulls while its downstream fails. By default
(breaker.scope: fleet) there is one per kind for the whole fleet, kept in the NATS bucket
<NS>_BREAKERS; with scope worker each worker keeps its own. 'breaker reset KIND' closes it
for every live worker at once.`,
	}
	var (
		wait time.Duration
		res  admin.BreakerResetResult
	)
	reset := actionCmd(&cobra.Command{
		Use:   "reset KIND",
		Short: "Close the kind's circuit breaker for the whole fleet",
		Long: `Reset KIND's circuit breaker for the whole fleet: the shared breaker closes once, for every
worker, and workers with a breaker of their own (scope worker) close theirs. Each forgets the
failures in its window and pulls the kind again at once, instead of waiting for open_for to
pass. If the downstream still fails, the breaker opens again.

It then waits up to --wait for the live workers serving KIND to apply the reset and says how
many did ("acknowledged by N of M live workers serving KIND"). Workers that start later read
the reset breaker when they start.

Jobs whose attempt failed while the breaker was open wait until the time the breaker would
have gone half-open; 'enqueue retry ID' runs one now.

The action is written to the audit log with --as.

` + kindActionExitCodes,
		Example: `  enqueue breaker reset charge --as ada
  enqueue breaker reset charge --wait 10s`,
	}, conn, queue.ValidateKind, "breaker reset requested for",
		func(c *admin.Client, ctx context.Context, kind string, by leveetype.Actor) error {
			var err error
			res, err = c.BreakerReset(ctx, admin.BreakerResetParams{Kind: kind, By: by, Wait: wait})
			return err
		})
	run := reset.RunE
	reset.RunE = func(cmd *cobra.Command, args []string) error {
		if wait < 0 {
			return cli.Usagef("--wait must not be negative, got %s", wait)
		}
		if err := run(cmd, args); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if res.Workers == 0 {
			_, err := fmt.Fprintf(out, "no live worker serves %s: workers that start read the reset breaker\n", args[0])
			return err
		}
		_, err := fmt.Fprintf(out, "acknowledged by %d of %d live workers serving %s\n", res.Acknowledged, res.Workers, args[0])
		return err
	}
	reset.Flags().DurationVar(&wait, "wait", 3*time.Second, "how long to wait for the live workers to apply the reset (0: do not wait)")
	breaker.AddCommand(reset)
	return breaker
}

// newOperatorCmds returns the operator commands: jobs, find, retry, cancel, pause, resume and
// breaker, all over the service layer the dashboard uses.
func newOperatorCmds(conn *cli.Connection) []*cobra.Command {
	return []*cobra.Command{
		newJobsCmd(conn), newFindCmd(conn), newRetryCmd(conn), newCancelCmd(conn),
		newPauseCmd(conn), newResumeCmd(conn), newBreakerCmd(conn), newAuditCmd(conn),
	}
}
