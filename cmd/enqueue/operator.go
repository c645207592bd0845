package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
)

// Exit codes of the operator commands (jobs, find, retry, cancel, pause, resume, breaker),
// besides cli.ExitOK, ExitError and ExitUsage.
const (
	exitNoJob    = 3 // no job with that id (or key)
	exitConflict = 4 // the action does not apply to the job's state
)

// operatorExitCodes is the exit code section of the operator commands' help.
const operatorExitCodes = `Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable
  2  usage error
  3  no job with that id (or idempotency key)
  4  the action does not apply to the job's current state (the message says why)`

// defaultActor names the operator in the audit log: $USER@hostname, else "cli".
func defaultActor() string {
	user, host := os.Getenv("USER"), ""
	if h, err := os.Hostname(); err == nil {
		host = h
	}
	switch {
	case user != "" && host != "":
		return user + "@" + host
	case user != "":
		return user
	}
	return "cli"
}

// addActorFlag adds --as to an action command.
func addActorFlag(cmd *cobra.Command, as *string) {
	cmd.Flags().StringVar(as, "as", defaultActor(), "who is acting, for the audit log")
}

// openOperatorClient connects to NATS and Postgres: every operator command reads or writes the
// ledger.
func openOperatorClient(ctx context.Context, conn *cli.Connection) (*levee.Client, error) {
	cfg, err := clientConfig(conn)
	if err != nil {
		return nil, err
	}
	cfg.DatabaseURL = conn.DatabaseURL
	// The command prints what it did, and the audit log keeps it: no log line on top.
	cfg.Logger = slog.New(slog.DiscardHandler)
	c, err := levee.NewClient(ctx, cfg)
	if err != nil {
		return nil, cli.ConnectHint(err)
	}
	return c, nil
}

// operatorError gives the service layer's conditions their exit codes.
func operatorError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, levee.ErrNotFound):
		return &cli.ExitCodeError{Code: exitNoJob, Err: err}
	case errors.Is(err, levee.ErrConflict):
		return &cli.ExitCodeError{Code: exitConflict, Err: err}
	case errors.Is(err, levee.ErrBadFilter):
		return &cli.UsageError{Err: err}
	}
	return cli.ConnectHint(err)
}

// actionCmd completes cmd, whose help the caller wrote, as an action on its one argument, a job
// ID or a KIND: the argument must pass validate, act runs on it as the --as actor, and on
// success the command prints done and the argument, e.g. "cancelled 01JC9X3V8J4T6M2Q7R5W0YBZ1N".
// act is a method expression such as (*levee.Client).CancelJob.
func actionCmd(cmd *cobra.Command, conn *cli.Connection, validate func(string) error, done string,
	act func(*levee.Client, context.Context, string, levee.Actor) error) *cobra.Command {
	var as string
	cmd.Args = cobra.ExactArgs(1)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		arg := args[0]
		if err := validate(arg); err != nil {
			return &cli.UsageError{Err: err}
		}
		if as == "" {
			return cli.Usagef("--as is empty: name who is acting, e.g. --as ada")
		}
		ctx := cmd.Context()
		c, err := openOperatorClient(ctx, conn)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := act(c, ctx, arg, levee.Actor(as)); err != nil {
			return operatorError(err)
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), done, arg)
		return err
	}
	addActorFlag(cmd, &as)
	return cmd
}
