package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/leveetype"
)

// purgeOptions are dlq purge's flags.
type purgeOptions struct {
	sel    selectionFlags
	yes    bool
	dryRun bool
	json   bool
	as     string
}

// purgeLine is one purged job as purge --json prints it.
type purgeLine struct {
	ID     string `json:"id"`
	Kind   string `json:"kind"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
	Purged bool   `json:"purged"`
	DryRun bool   `json:"dry_run,omitempty"`
}

func newDLQPurgeCmd(conn *cli.Connection) *cobra.Command {
	var o purgeOptions
	cmd := &cobra.Command{
		Use:   "purge (ID... | --all [--kind K] [--reason R] [--older-than D] [--since D]) --yes",
		Short: "Remove dead jobs for good",
		Long: `Remove dead jobs from the dead-letter queue for good. Give job IDs, or --all for every dead job
the filters select (--all with no filter empties the queue). Only NATS is needed; the ledger
keeps the jobs' rows until the reaper's retention passes, so 'enqueue status' still reports
them dead until then.

Purging needs --yes. Without it, on a terminal, purge asks you to type the number of jobs it
is about to remove; when stdin is not a terminal it refuses (exit 2). --dry-run lists what
would be purged and changes nothing.

Output: one line per job, "purged ID", or with --json
{"id":...,"kind":...,"key":...,"reason":...,"purged":true}; failures and the summary
"purged N dead jobs" go to stderr.

Exit codes:
  0  every job was purged
  1  error: NATS unreachable, some job could not be purged, or the confirmation was refused
  2  usage error: bad flag, filter or duration, IDs together with --all, or neither, or no
     --yes when stdin is not a terminal
  3  some ID is not in the dead-letter queue (and nothing failed)`,
		Example: `  enqueue dlq purge 01JC9X3V8J4T6M2Q7R5W0YBZ1N --yes
  enqueue dlq purge --all --older-than 30d --yes
  enqueue dlq purge --all --kind charge --reason permanent_error --dry-run
  enqueue dlq purge --all --kind charge --reason permanent_error`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDLQPurge(cmd, conn, o, args)
		},
	}
	fs := cmd.Flags()
	o.sel.add(fs, "purge")
	addActorFlag(cmd, &o.as)
	fs.BoolVar(&o.yes, "yes", false, "purge without asking")
	fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be purged; change nothing")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per job")
	return cmd
}

func runDLQPurge(cmd *cobra.Command, conn *cli.Connection, o purgeOptions, ids []string) error {
	if err := o.sel.check(ids); err != nil {
		return err
	}
	f, err := o.sel.filter.filter(time.Now())
	if err != nil {
		return err
	}
	stdin := cmd.InOrStdin()
	ask := !o.yes && !o.dryRun
	if ask && !stdinIsTerminal(stdin) {
		return cli.Usagef("purge needs --yes (stdin is not a terminal to confirm on)")
	}

	ctx := cmd.Context()
	// NATS is enough to purge; the ledger, when it answers, keeps the audit log of it.
	c, lc, err := openAdmin(ctx, conn, clientNeeds{db: !o.dryRun, dbOptional: cmd.ErrOrStderr(), withoutDB: "purging without writing the audit log", quiet: true})
	if err != nil {
		return err
	}
	defer lc.Close()
	sel, err := selectAndReport(cmd, c, ids, o.sel.all, f)
	if err != nil || sel == nil {
		return err
	}
	if ask && len(sel.jobs) > 0 {
		ok, err := confirm(stdin, cmd.ErrOrStderr(), len(sel.jobs))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("purge cancelled: nothing was purged")
		}
	}
	return runDLQAction(cmd, sel, o.dryRun, dlqAction{
		verb: "purge", done: "purged", progress: "purging", jobs: "dead jobs", json: o.json,
		dryLine: func(dj leveetype.DeadJob) any {
			return purgeLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, DryRun: true}
		},
		do: func(ctx context.Context, dj leveetype.DeadJob) (any, string, bool, error) {
			err := c.DeadJobPurge(ctx, dj)
			if err != nil && ctx.Err() == nil && entryGone(ctx, c, dj) {
				return nil, "", true, nil
			}
			if err == nil {
				if aerr := c.AuditRecord(ctx, admin.AuditRecordParams{By: leveetype.Actor(o.as), Action: "dlq.purge", Target: dj.ID,
					Detail: dj.Kind + ", " + dj.Reason}); aerr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "enqueue: warning: job %s was purged, but the audit log did not record it: %v\n", dj.ID, aerr)
				}
			}
			return purgeLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, Purged: true}, "", false, err
		},
		failure: func(dj leveetype.DeadJob, err error) string {
			return fmt.Sprintf("job %s was not purged: %v", dj.ID, err)
		},
		summary: func(done, failed int) string {
			if failed > 0 {
				return fmt.Sprintf("purged %s (%d failed)", cli.Count(done, "dead job"), failed)
			}
			return fmt.Sprintf("purged %s", cli.Count(done, "dead job"))
		},
	})
}

// entryGone reports whether the DLQ entry of dj is no longer there (someone replayed or purged
// it meanwhile), which is why deleting it failed. Client.Purge does not say so itself.
func entryGone(ctx context.Context, c *admin.Client, dj leveetype.DeadJob) bool {
	now, err := c.DeadJobGet(ctx, dj.ID)
	return errors.Is(err, levee.ErrJobNotFound) || (err == nil && now.Sequence != dj.Sequence)
}

// stdinIsTerminal reports whether r is a terminal one can be asked on.
func stdinIsTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && cli.IsTerminal(f)
}

// confirm asks on w to type n and reads the answer from r: true only for exactly n.
func confirm(r io.Reader, w io.Writer, n int) (bool, error) {
	fmt.Fprintf(w, "purge %s? type the number to confirm: ", cli.Count(n, "dead job"))
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read confirmation: %w", err)
	}
	if errors.Is(err, io.EOF) && line == "" {
		fmt.Fprintln(w)
	}
	return strings.TrimSpace(line) == strconv.Itoa(n), nil
}
