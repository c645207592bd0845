package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newCancelCmd(conn *cli.Connection) *cobra.Command {
	var as string
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Stop a queued or retrying job from running again",
		Long: `Cancel job ID: a job still waiting in the stream, or retrying, ends dead with reason
cancelled, and a copy goes to the dead-letter queue, so 'enqueue retry ID' (or 'dlq replay')
can bring it back. The ledger is written first: a worker that receives the job's message finds
its key dead and drops it without running it.

A running job cannot be cancelled (pause its kind to stop new attempts), nor can a finished
one. The action is written to the audit log with --as.

` + operatorExitCodes,
		Example: `  enqueue cancel 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue cancel 01JC9X3V8J4T6M2Q7R5W0YBZ1N --as ada`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := queue.ValidateID(id); err != nil {
				return &cli.UsageError{Err: err}
			}
			return runAction(cmd, conn, as, func(ctx context.Context, c *levee.Client, by levee.Actor) (string, error) {
				return "cancelled " + id, c.CancelJob(ctx, id, by)
			})
		},
	}
	addActorFlag(cmd, &as)
	return cmd
}
