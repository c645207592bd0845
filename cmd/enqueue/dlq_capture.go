package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

// captureOptions are capture-orphans's flags.
type captureOptions struct {
	kind  string
	limit int
	force bool
	json  bool
}

// captureResult is what capture-orphans --json prints.
type captureResult struct {
	Kind     string   `json:"kind"`
	Reason   string   `json:"reason"`
	Captured int      `json:"captured"`
	IDs      []string `json:"ids"`
}

// newDLQCaptureOrphansCmd is `enqueue dlq capture-orphans`; the dlq command attaches it.
func newDLQCaptureOrphansCmd(conn *cli.Connection) *cobra.Command {
	var o captureOptions
	cmd := &cobra.Command{
		Use:   "capture-orphans --kind KIND",
		Short: "Move the jobs of a kind that no worker serves to the dead-letter queue",
		Long: `Move the jobs of KIND waiting in the work stream to the dead-letter queue with reason
no_handler. Jobs of a kind that no worker serves wait in the stream forever ('enqueue stats'
marks such a kind "orphan (no worker)"); once captured they can be listed, shown, replayed
when a worker serves the kind, or purged with the other 'enqueue dlq' commands.

Each job is recorded dead in the Postgres ledger (so 'enqueue status ID' says dead, no_handler),
copied to the dead-letter queue, then removed from the work stream, oldest first. A message that
is not a valid job is dead-lettered with reason malformed instead. Only the jobs stored when the
capture starts are taken, at most --limit of them. Running it again is safe: a capture that
failed half-way leaves the rest in the stream.

It refuses a kind that a worker serves: one whose consumer exists (a worker served it once) or
that has live workers. Stop those workers first, or pass --force: the capture then reads
through the kind's consumer, taking the jobs no worker holds at that moment. While a capture
without --force runs, a worker of the kind cannot start.

Needs NATS and the ledger (--database-url).

Output: "captured N jobs of kind KIND with reason no_handler" (N includes malformed ones), or
with --json {"kind":...,"reason":"no_handler","captured":N,"ids":[...]}.

Exit codes:
  0  captured (perhaps none)
  1  error, or refused: a worker serves the kind
  2  usage error: --kind missing or invalid, negative --limit`,
		Example: `  enqueue stats                                      # kinds marked "orphan (no worker)"
  enqueue dlq capture-orphans --kind emial            # jobs published under a misspelled kind
  enqueue dlq capture-orphans --kind report --limit 100 --json
  enqueue dlq capture-orphans --kind legacy --force   # its workers are retired; its consumer remains`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCaptureOrphans(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kind, "kind", "", "the kind whose jobs to capture (required)")
	fs.IntVar(&o.limit, "limit", 0, "capture at most this many jobs, oldest first; 0 means all")
	fs.BoolVar(&o.force, "force", false, "capture even though the kind's consumer exists or workers serve it")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	return cmd
}

func runCaptureOrphans(cmd *cobra.Command, conn *cli.Connection, o captureOptions) error {
	if o.kind == "" {
		return cli.Usagef("missing --kind: name the kind whose jobs to capture")
	}
	if err := queue.ValidateKind(o.kind); err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.limit < 0 {
		return cli.Usagef("invalid --limit %d: give a number of jobs, or 0 for all", o.limit)
	}
	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, clientNeeds{db: true})
	if err != nil {
		return err
	}
	defer lc.Close()

	res := captureResult{Kind: o.kind, Reason: "no_handler", IDs: []string{}}
	n, err := c.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: o.kind, Limit: o.limit, Force: o.force, OnJob: func(id string) { res.IDs = append(res.IDs, id) }})
	res.Captured = n
	if errors.Is(err, admin.ErrKindServed) {
		return fmt.Errorf("%w; stop its workers, or pass --force to capture anyway", err)
	}
	if err != nil && n == 0 {
		return err
	}
	if o.json {
		if perr := json.NewEncoder(cmd.OutOrStdout()).Encode(res); perr != nil {
			return perr
		}
	} else {
		jobs := "jobs"
		if n == 1 {
			jobs = "job"
		}
		fmt.Fprintf(cmd.OutOrStdout(), "captured %d %s of kind %s with reason no_handler\n", n, jobs, o.kind)
	}
	return err
}
