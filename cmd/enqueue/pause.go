package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
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

` + kindActionExitCodes,
		Example: `  enqueue pause charge --as ada
  enqueue resume charge --as ada`,
	}, conn, queue.ValidateKind, "paused", withWorkerCount((*admin.Client).KindPause, "stop pulling it"))
}

func newResumeCmd(conn *cli.Connection) *cobra.Command {
	return actionCmd(&cobra.Command{
		Use:   "resume KIND",
		Short: "Let the fleet pull a paused kind again",
		Long: `Resume KIND: every worker of the kind pulls it again, and the jobs that waited drain at the
kind's pace. Resuming a kind that is not paused changes nothing.

The action is written to the audit log with --as.

` + kindActionExitCodes,
		Example: `  enqueue resume charge --as ada`,
	}, conn, queue.ValidateKind, "resumed", withWorkerCount((*admin.Client).KindResume, "pull it again"))
}

// withWorkerCount wraps a kind action: once it is done, it says on stderr how many live workers
// serve the kind and apply it, or that none does yet.
func withWorkerCount(act func(*admin.Client, context.Context, string, leveetype.Actor) error, what string) func(*admin.Client, context.Context, string, leveetype.Actor) error {
	return func(c *admin.Client, ctx context.Context, kind string, by leveetype.Actor) error {
		if err := act(c, ctx, kind, by); err != nil {
			return err
		}
		n, err := c.KindWorkers(ctx, kind)
		switch {
		case err != nil:
			fmt.Fprintf(stderrOf(ctx), "the live workers serving %s could not be counted: %v\n", kind, err) // done all the same
		case n == 0:
			fmt.Fprintf(stderrOf(ctx), "no live worker serves %s now: workers that start apply it\n", kind)
		default:
			fmt.Fprintf(stderrOf(ctx), "%s serving %s %s within a second\n", cli.Count(n, "worker"), kind, what)
		}
		return nil
	}
}
