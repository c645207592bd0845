package main

import (
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newPauseCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "pause KIND",
		Short: "Stop every worker from pulling a kind, until resume",
		Long: `Pause KIND across the fleet: every worker stops pulling it within moments (a pull already
waiting may still bring one batch), in-flight attempts finish, and new jobs wait in NATS. The
pause is kept in the NATS bucket <NAMESPACE>_CONTROL, so workers started meanwhile start
paused, until 'enqueue resume KIND'. The dashboard shows paused kinds.

The action is written to the audit log with --as.

` + operatorExitCodes,
		Example: `  enqueue pause charge --as ada
  enqueue resume charge --as ada`,
	}, conn, queue.ValidateKind, "paused", (*levee.Client).PauseKind)
}

func newResumeCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "resume KIND",
		Short: "Let the fleet pull a paused kind again",
		Long: `Resume KIND: every worker of the kind pulls it again, and the jobs that waited drain at the
kind's pace. Resuming a kind that is not paused changes nothing.

The action is written to the audit log with --as.

` + operatorExitCodes,
		Example: `  enqueue resume charge --as ada`,
	}, conn, queue.ValidateKind, "resumed", (*levee.Client).ResumeKind)
}
