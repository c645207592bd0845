package main

import (
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newRetryCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "retry ID",
		Short: "Run a dead, retrying or scheduled job now",
		Long: `Retry job ID. A dead job is replayed from the dead-letter queue exactly as 'enqueue dlq
replay ID' does: same id and key, a fresh attempt budget, and a key whose effect already
happened is never run twice. A retrying job is made due now and handed to a worker at once,
instead of waiting for its backoff. A scheduled job (published with --delay or --at, or a
periodic tick) is made due now: a running worker publishes it within about a second, and
stderr says when it was due.

Queued, running and succeeded jobs cannot be retried. The action is written to the audit log
with --as.

` + jobActionExitCodes,
		Example: `  enqueue retry 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue retry 01JC9X3V8J4T6M2Q7R5W0YBZ1N --as ada`,
	}, conn, queue.ValidateID, "retrying", withScheduledNote((*admin.Client).JobRetry,
		"it is due now: a running worker publishes it within a second"))
}
