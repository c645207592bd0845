package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/leveetype"
	"github.com/spf13/cobra"
)

// dlqAction is what a selection-based DLQ command (purge, replay) does to each selected job;
// runDLQAction runs it over the selection: --dry-run listing, pacing, progress, one line per
// job, notes, summary, interruption and exit code, the same for both.
type dlqAction struct {
	// verb and done name the action ("purge", "purged"); progress names it under way.
	verb, done, progress string
	// jobs names the jobs in the summaries ("dead jobs", "jobs").
	jobs string
	// json prints one JSON object per job.
	json bool
	// dryLine is a job's --json line of --dry-run.
	dryLine func(leveetype.DeadJob) any
	// pace, if set, waits before each job; an error ends the run as an interruption.
	pace func(context.Context) error
	// do acts on one job. It returns the job's --json line and a note to print after it (or
	// ""); gone means the job left the DLQ meanwhile (replayed or purged by someone else).
	do func(context.Context, leveetype.DeadJob) (line any, note string, gone bool, err error)
	// failure words a failed job's error line (after "enqueue: ").
	failure func(leveetype.DeadJob, error) string
	// summary words the last line, on stderr.
	summary func(done, failed int) string
}

// runDLQAction runs a over sel, or lists what it would do with dryRun.
func runDLQAction(cmd *cobra.Command, sel *selection, dryRun bool, a dlqAction) error {
	ctx, stdout, stderr := cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr()
	if dryRun {
		for _, dj := range sel.jobs {
			if a.json {
				if err := json.NewEncoder(stdout).Encode(a.dryLine(dj)); err != nil {
					return err
				}
				continue
			}
			fmt.Fprintf(stdout, "would %s %s (%s, %s)\n", a.verb, dj.ID, dj.Kind, dj.Reason)
		}
		fmt.Fprintf(stderr, "would %s %d %s; nothing was changed (--dry-run)\n", a.verb, len(sel.jobs), a.jobs)
		return outcome(0, len(sel.unknown))
	}

	rep := newReporter(stdout, stderr, len(sel.jobs), a.progress)
	done, failed, gone := 0, 0, 0
	for _, dj := range sel.jobs {
		if ctx.Err() != nil {
			break
		}
		if a.pace != nil && a.pace(ctx) != nil {
			break // interrupted: the summary says how far it got
		}
		line, note, isGone, err := a.do(ctx, dj)
		rep.step()
		switch {
		case isGone:
			gone++
			rep.note("enqueue: %v (replayed or purged meanwhile)", notInDLQ(dj.ID))
			continue
		case err != nil:
			failed++
			rep.note("enqueue: %s", a.failure(dj, err))
			continue
		}
		done++
		if a.json {
			rep.clear()
			if err := json.NewEncoder(stdout).Encode(line); err != nil {
				return err
			}
		} else {
			rep.out("%s %s", a.done, dj.ID)
		}
		if note != "" {
			rep.note("note: job %s: %s", dj.ID, note)
		}
	}
	rep.finish()
	fmt.Fprintln(stderr, a.summary(done, failed))
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s interrupted after %d of %s: %w", a.verb, done+failed+gone, cli.Count(len(sel.jobs), "job"), err)
	}
	return outcome(failed, len(sel.unknown)+gone)
}
