package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/leveetype"
)

// Exit codes of the operator commands (jobs, find, retry, cancel, pause, resume, breaker),
// besides cli.ExitOK, ExitError and ExitUsage.
const (
	exitNoJob    = 3 // no job with that id (or key)
	exitConflict = 4 // the action does not apply to the job's state
)

// The exit code sections of the operator commands' help: each lists the codes it can return.
const (
	jobActionExitCodes = `Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable
  2  usage error
  3  no job with that id
  4  the action does not apply to the job's current state (the message says why)`
	findExitCodes = `Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable
  2  usage error
  3  no job with that id or idempotency key`
	listExitCodes = `Exit codes:
  0  ok (also when nothing matches)
  1  error, such as NATS or Postgres unreachable
  2  usage error, such as an invalid filter`
	kindActionExitCodes = `Exit codes:
  0  ok
  1  error, such as NATS or Postgres unreachable
  2  usage error, or a kind that no worker serves and no job of it waits for (a typo: the
     message names the nearest known kind)`
)

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

// operatorNeeds: every operator command reads or writes the ledger, and prints what it did
// (the audit log keeps it): no log line on top.
var operatorNeeds = clientNeeds{db: true, quiet: true}

// operatorError gives the service layer's conditions their exit codes.
func operatorError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, admin.ErrNotFound):
		return &cli.ExitCodeError{Code: exitNoJob, Err: err}
	case errors.Is(err, admin.ErrConflict):
		return &cli.ExitCodeError{Code: exitConflict, Err: err}
	case errors.Is(err, admin.ErrBadFilter), errors.Is(err, admin.ErrUnknownKind):
		return &cli.UsageError{Err: err}
	}
	return cli.ConnectHint(err)
}

// actionCmd completes cmd, whose help the caller wrote, as an action on its one argument, a job
// ID or a KIND: the argument must pass validate, act runs on it as the --as actor, and on
// success the command prints done and the argument, e.g. "cancelled 01JC9X3V8J4T6M2Q7R5W0YBZ1N".
// act is a method expression such as (*admin.Client).JobCancel.
func actionCmd(cmd *cobra.Command, conn *cli.Connection, validate func(string) error, done string,
	act func(*admin.Client, context.Context, string, leveetype.Actor) error) *cobra.Command {
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
		ctx := context.WithValue(cmd.Context(), stderrKey{}, cmd.ErrOrStderr())
		c, lc, err := openAdmin(ctx, conn, operatorNeeds)
		if err != nil {
			return err
		}
		defer lc.Close()
		if err := act(c, ctx, arg, leveetype.Actor(as)); err != nil {
			return operatorError(err)
		}
		_, err = fmt.Fprintln(cmd.OutOrStdout(), done, arg)
		return err
	}
	addActorFlag(cmd, &as)
	return cmd
}

// withScheduledNote wraps a job action: when the job was scheduled as the action began, it
// says on stderr when the job was due and then what (e.g. "it will not run"), once the action
// is done. ID in what stands for the job's id.
func withScheduledNote(act func(*admin.Client, context.Context, string, leveetype.Actor) error, what string) func(*admin.Client, context.Context, string, leveetype.Actor) error {
	return func(c *admin.Client, ctx context.Context, id string, by leveetype.Actor) error {
		st, err := c.JobGet(ctx, id)
		if err != nil {
			st = nil // the action finds out, and says so
		}
		if err := act(c, ctx, id, by); err != nil {
			return err
		}
		if st != nil && st.State == leveetype.StateScheduled && st.RunAt != nil {
			fmt.Fprintf(stderrOf(ctx), "job %s was scheduled for %s: %s\n", id, runAtText(*st.RunAt, time.Now()),
				strings.ReplaceAll(what, "ID", id))
		}
		return nil
	}
}

type stderrKey struct{}

// stderrOf is the command's standard error that actionCmd puts in ctx, for an action's notes.
func stderrOf(ctx context.Context) io.Writer {
	if w, ok := ctx.Value(stderrKey{}).(io.Writer); ok {
		return w
	}
	return io.Discard
}
