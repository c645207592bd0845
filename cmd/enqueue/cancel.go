package main

import (
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newCancelCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "cancel ID",
		Short: "Stop a scheduled, queued or retrying job from running again",
		Long: `Cancel job ID: a job still waiting in the stream, or retrying, ends dead with reason
cancelled, and a copy goes to the dead-letter queue, so 'enqueue retry ID' (or 'dlq replay')
can bring it back. The ledger is written first: a worker that receives the job's message finds
its key dead and drops it without running it.

A scheduled job (published with --delay or --at, or a periodic tick) is taken out of the
ledger's schedule in the same transaction, so it is never published, and ends the same way:
dead with reason cancelled, with a copy in the dead-letter queue; stderr says when it was due.
One that a worker publishes at that very moment is cancelled in the stream instead.

A running job cannot be cancelled (pause its kind to stop new attempts), nor can a finished
one. The action is written to the audit log with --as.

` + jobActionExitCodes,
		Example: `  enqueue cancel 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue cancel 01JC9X3V8J4T6M2Q7R5W0YBZ1N --as ada`,
	}, conn, queue.ValidateID, "cancelled", withScheduledNote((*admin.Client).JobCancel,
		"it will not run; 'enqueue retry ID' runs it after all"))
}
