package main

import (
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func newBreakerCmd(conn *cli.Connection) *cobra.Command {
	breaker := &cobra.Command{
		Use:   "breaker",
		Short: "Operate the circuit breakers of a kind",
		Long: `Each worker keeps a circuit breaker per kind, which stops the kind's pulls while its
downstream fails. 'breaker reset KIND' closes it on every live worker at once.`,
	}
	reset := actionCmd(&cobra.Command{
		Use:   "reset KIND",
		Short: "Close the kind's circuit breaker on every live worker",
		Long: `Reset KIND's circuit breaker on every live worker: each closes it, forgets the failures in
its window and pulls the kind again at once, instead of waiting for open_for to pass. If the
downstream still fails, the breakers open again after min_calls failures.

Jobs whose attempt failed while the breaker was open wait until the time the breaker would
have reopened; 'enqueue retry ID' runs one now.

The action is written to the audit log with --as.

` + operatorExitCodes,
		Example: `  enqueue breaker reset charge --as ada`,
	}, conn, queue.ValidateKind, "breaker reset requested for", (*levee.Client).ResetBreaker)
	breaker.AddCommand(reset)
	return breaker
}

// newOperatorCmds returns the operator commands: jobs, find, retry, cancel, pause, resume and
// breaker, all over the service layer the dashboard uses.
func newOperatorCmds(conn *cli.Connection) []*cobra.Command {
	return []*cobra.Command{
		newJobsCmd(conn), newFindCmd(conn), newRetryCmd(conn), newCancelCmd(conn),
		newPauseCmd(conn), newResumeCmd(conn), newBreakerCmd(conn),
	}
}
