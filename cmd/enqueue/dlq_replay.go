package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// replayOptions are dlq replay's flags.
type replayOptions struct {
	sel         selectionFlags
	rate        string
	dryRun      bool
	payload     string
	allowChange bool
	json        bool
	as          string
}

// replayLine is one replayed job as replay --json prints it.
type replayLine struct {
	ID       string `json:"id"`
	Kind     string `json:"kind"`
	Key      string `json:"key"`
	KeyState string `json:"key_state"`
	Replayed bool   `json:"replayed"`
	DryRun   bool   `json:"dry_run,omitempty"`
}

func newDLQReplayCmd(conn *cli.Connection) *cobra.Command {
	var o replayOptions
	cmd := &cobra.Command{
		Use:   "replay (ID... | --all [--kind K] [--reason R] [--since D] [--older-than D])",
		Short: "Put dead jobs back to work",
		Long: `Put dead jobs back in the work stream, with the same id, kind and idempotency key and a fresh
attempt budget, then remove them from the dead-letter queue. Give job IDs, or --all for every
dead job the filters select (--all with no filter replays the whole queue).

The ledger is updated before the job is republished, so a job's effect never happens twice: if
its key already succeeded (say a duplicate of the job did the work), the replayed job is
acknowledged as a duplicate and not run; replay says so. A job that fails to replay stays in
the dead-letter queue, to try again. Replay needs NATS and Postgres (--database-url).

--payload replaces the payload of one job (give exactly one ID; - reads it from stdin). The
idempotency key is bound to its payload, so a payload that differs from the job's needs
--allow-payload-change too: the key is then bound to the new payload.

--rate paces the replays, e.g. 50/s or 600/m (default: as fast as they go), so that a large
replay does not flood the downstream. --dry-run lists what would be replayed and changes
nothing.

Output: one line per job, "replayed ID", or with --json
{"id":...,"kind":...,"key":...,"key_state":...,"replayed":true}, where key_state is the key's
state before the replay ("dead", "succeeded", or "" for no ledger row). Failures and a
summary go to stderr, with a progress bar on a terminal.

Exit codes:
  0  every job was replayed
  1  error: NATS or Postgres unreachable, or some job could not be replayed
  2  usage error: bad flag, filter or rate, IDs together with --all, or neither
  3  some ID is not in the dead-letter queue (and nothing failed)`,
		Example: `  enqueue dlq replay 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue dlq replay 01JC9X3V8J4T6M2Q7R5W0YBZ1N 01JC9X4B2C8D0E6F1G3H5J7K9M --json
  enqueue dlq replay --all --kind charge --reason max_attempts --since 2h --rate 50/s
  enqueue dlq replay --all --dry-run
  enqueue dlq replay 01JC9X3V8J4T6M2Q7R5W0YBZ1N --payload '{"amount":1200}' --allow-payload-change`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDLQReplay(cmd, conn, o, args)
		},
	}
	fs := cmd.Flags()
	o.sel.add(fs, "replay")
	addActorFlag(cmd, &o.as)
	fs.StringVar(&o.rate, "rate", "", `replay at most this many jobs per second, minute or hour, e.g. "50/s" (default: no limit)`)
	fs.BoolVar(&o.dryRun, "dry-run", false, "list what would be replayed; change nothing")
	fs.StringVar(&o.payload, "payload", "", "replace the payload of the one job given (JSON, or - for stdin)")
	fs.BoolVar(&o.allowChange, "allow-payload-change", false, "let --payload differ from the job's payload (the key is bound to the new one)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per job")
	return cmd
}

func runDLQReplay(cmd *cobra.Command, conn *cli.Connection, o replayOptions, ids []string) error {
	if err := o.sel.check(ids); err != nil {
		return err
	}
	f, err := o.sel.filter.filter(time.Now())
	if err != nil {
		return err
	}
	r, err := leveetype.ParseRate(o.rate)
	if err != nil {
		return cli.Usagef("invalid --rate: %w", err)
	}
	opts := admin.DeadJobReplayParams{AllowPayloadChange: o.allowChange, By: leveetype.Actor(o.as)}
	if cmd.Flags().Changed("payload") {
		if len(ids) != 1 {
			return cli.Usagef("--payload replaces the payload of one job: give exactly one ID")
		}
		if opts.Payload, err = readPayload(cmd.InOrStdin(), o.payload, queue.DefaultMaxPayload); err != nil {
			return err
		}
	} else if o.allowChange {
		return cli.Usagef("--allow-payload-change goes with --payload")
	}

	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, clientNeeds{db: !o.dryRun}) // only a replay writes the ledger
	if err != nil {
		return err
	}
	defer lc.Close()
	sel, err := selectAndReport(cmd, c, ids, o.sel.all, f)
	if err != nil || sel == nil {
		return err
	}
	lim := executor.NewLimiter(r, 1, nil)
	return runDLQAction(cmd, sel, o.dryRun, dlqAction{
		verb: "replay", done: "replayed", progress: "replaying", jobs: "jobs", json: o.json,
		dryLine: func(dj leveetype.DeadJob) any { return replayLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, DryRun: true} },
		pace: func(ctx context.Context) error {
			if _, err := lim.Available(ctx, 1); err != nil {
				return err
			}
			lim.Take(1)
			return nil
		},
		do: func(ctx context.Context, dj leveetype.DeadJob) (any, string, bool, error) {
			res, err := replayOne(ctx, c, dj, sel.partial, opts)
			if errors.Is(err, levee.ErrJobNotFound) {
				return nil, "", true, nil
			}
			line := replayLine{ID: dj.ID, Kind: dj.Kind, Key: dj.Key, KeyState: res.KeyState, Replayed: true}
			if err == nil {
				if aerr := c.AuditRecord(ctx, admin.AuditRecordParams{By: leveetype.Actor(o.as), Action: "dlq.replay", Target: dj.ID,
					Detail: "key was " + cmp.Or(res.KeyState, "not in the ledger")}); aerr != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "enqueue: warning: job %s was replayed, but the audit log did not record it: %v\n", dj.ID, aerr)
				}
			}
			return line, keyStateNote(dj, res.KeyState, opts.Payload != nil), false, err
		},
		failure: func(dj leveetype.DeadJob, err error) string { return replayError(dj.ID, err).Error() },
		summary: func(done, failed int) string {
			return fmt.Sprintf("replayed %s (%d failed)", cli.Count(done, "job"), failed)
		},
	})
}

// replayOne replays dj, reading it again first when the selection left its payload out.
func replayOne(ctx context.Context, c *admin.Client, dj leveetype.DeadJob, partial bool, opts admin.DeadJobReplayParams) (admin.DeadJobReplayResult, error) {
	if partial {
		full, err := c.DeadJobGet(ctx, dj.ID)
		if err != nil {
			return admin.DeadJobReplayResult{}, err
		}
		dj = *full
	}
	return c.DeadJobReplay(ctx, dj, opts)
}

// replayError words a failed replay of job id.
func replayError(id string, err error) error {
	if errors.Is(err, admin.ErrPayloadChange) {
		return fmt.Errorf("job %s was not replayed: --payload differs from the job's payload, and its idempotency key is bound to that one; add --allow-payload-change to replay it with the new payload", id)
	}
	// The service's errors may start with "replay ID: " already.
	return fmt.Errorf("job %s was not replayed: %s", id, strings.TrimPrefix(err.Error(), "replay "+id+": "))
}

// keyStateNote says what will become of a replayed job whose key was not dead, or "".
func keyStateNote(dj leveetype.DeadJob, keyState string, newPayload bool) string {
	switch {
	case dj.Reason == executor.ReasonKeyReused && !newPayload:
		return fmt.Sprintf("key %s is bound to another job's payload: replayed unchanged, the job will be dead-lettered again (give --payload to change it)", dj.Key)
	case keyState == "succeeded":
		return fmt.Sprintf("key %s already succeeded: the job will be acknowledged as a duplicate, not run", dj.Key)
	case keyState == "running" || keyState == "retrying":
		return fmt.Sprintf("key %s is %s under another job: the replayed job waits for it and takes its outcome", dj.Key, keyState)
	}
	return ""
}
