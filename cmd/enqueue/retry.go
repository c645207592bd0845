package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newRetryCmd(conn *cli.Connection) *cobra.Command {
	var as string
	cmd := &cobra.Command{
		Use:   "retry ID",
		Short: "Run a dead or retrying job again now",
		Long: `Retry job ID. A dead job is replayed from the dead-letter queue exactly as 'enqueue dlq
replay ID' does: same id and key, a fresh attempt budget, and a key whose effect already
happened is never run twice. A retrying job is made due now and handed to a worker at once,
instead of waiting for its backoff.

Queued, running and succeeded jobs cannot be retried. The action is written to the audit log
with --as.

` + operatorExitCodes,
		Example: `  enqueue retry 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue retry 01JC9X3V8J4T6M2Q7R5W0YBZ1N --as ada`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := queue.ValidateID(id); err != nil {
				return &cli.UsageError{Err: err}
			}
			return runAction(cmd, conn, as, func(ctx context.Context, c *levee.Client, by levee.Actor) (string, error) {
				return "retrying " + id, c.RetryJob(ctx, id, by)
			})
		},
	}
	addActorFlag(cmd, &as)
	return cmd
}
