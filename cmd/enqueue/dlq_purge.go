package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
)

// purgeOptions are dlq purge's flags.
type purgeOptions struct {
	sel    selectionFlags
	yes    bool
	dryRun bool
	json   bool
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
	c, err := openDLQClient(ctx, conn, false)
	if err != nil {
		return err
	}
	defer c.Close()
	sel, err := selectAndReport(cmd, c, ids, o.sel.all, f)
	if err != nil || sel == nil {
		return err
	}
	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()

	if o.dryRun {
		for _, dj := range sel.jobs {
			if o.json {
				if err := json.NewEncoder(stdout).Encode(purgeLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, DryRun: true}); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(stdout, "would purge %s (%s, %s)\n", dj.ID, dj.Kind, dj.Reason)
		}
		fmt.Fprintf(stderr, "would purge %d dead jobs; nothing was changed (--dry-run)\n", len(sel.jobs))
		return outcome(0, len(sel.unknown))
	}
	if ask && len(sel.jobs) > 0 {
		ok, err := confirm(stdin, stderr, len(sel.jobs))
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("purge cancelled: nothing was purged")
		}
	}

	rep := newReporter(stdout, stderr, len(sel.jobs), "purging")
	purged, failed, gone := 0, 0, 0
	for _, dj := range sel.jobs {
		if ctx.Err() != nil {
			break
		}
		err := c.Purge(ctx, dj)
		rep.step()
		if err != nil && ctx.Err() == nil && entryGone(ctx, c, dj) {
			gone++
			rep.note("enqueue: %v (replayed or purged meanwhile)", notInDLQ(dj.ID))
			continue
		}
		if err != nil {
			failed++
			rep.note("enqueue: job %s was not purged: %v", dj.ID, err)
			continue
		}
		purged++
		if o.json {
			rep.clear()
			if err := json.NewEncoder(stdout).Encode(purgeLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, Reason: dj.Reason, Purged: true}); err != nil {
				return err
			}
			continue
		}
		rep.out("purged %s", dj.ID)
	}
	rep.finish()
	if failed > 0 {
		fmt.Fprintf(stderr, "purged %d dead jobs (%d failed)\n", purged, failed)
	} else {
		fmt.Fprintf(stderr, "purged %d dead jobs\n", purged)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("purge interrupted after %d of %d jobs: %w", purged+failed+gone, len(sel.jobs), err)
	}
	return outcome(failed, len(sel.unknown)+gone)
}

// entryGone reports whether the DLQ entry of dj is no longer there (someone replayed or purged
// it meanwhile), which is why deleting it failed. Client.Purge does not say so itself.
func entryGone(ctx context.Context, c *levee.Client, dj levee.DeadJob) bool {
	now, err := c.DeadJob(ctx, dj.ID)
	return errors.Is(err, levee.ErrJobNotFound) || (err == nil && now.Sequence != dj.Sequence)
}

// stdinIsTerminal reports whether r is a terminal one can be asked on.
func stdinIsTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && cli.IsTerminal(f)
}

// confirm asks on w to type n and reads the answer from r: true only for exactly n.
func confirm(r io.Reader, w io.Writer, n int) (bool, error) {
	fmt.Fprintf(w, "purge %d dead jobs? type the number to confirm: ", n)
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read confirmation: %w", err)
	}
	if errors.Is(err, io.EOF) && line == "" {
		fmt.Fprintln(w)
	}
	return strings.TrimSpace(line) == strconv.Itoa(n), nil
}
