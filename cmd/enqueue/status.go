package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/every"
	"github.com/levee-dev/levee/internal/queue"
)

// Exit codes of status, besides cli.ExitOK, ExitError and ExitUsage.
const (
	exitNotFound = 3 // no such job id
	exitDead     = 4 // --wait: the job ended dead
	exitTimeout  = 5 // --wait: no final state in time
)

// pollInterval is how often status --wait asks again.
const pollInterval = 200 * time.Millisecond

// statusOptions are status's flags.
type statusOptions struct {
	json bool
	wait time.Duration
}

func newStatusCmd(conn *cli.Connection) *cobra.Command {
	var o statusOptions
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show what Levee knows of a job",
		Long: `Show the state of job ID: scheduled (waiting in the ledger until its run_at), queued (waiting
in the stream), running, retrying (with the next attempt's time), succeeded (with the
handler's result) or dead (with the reason), and its attempts, last error and times.

A job waiting in the stream is found through NATS alone; scheduled, running and finished jobs
are read from the Postgres ledger (--database-url). A scheduled job's enqueued_at is when it
was published, and its last_error the last failed attempt to publish it when due.

With --wait, status asks again every 200ms until the job is succeeded or dead, or the wait ends;
it then prints the last state it saw. A job that fell back to another kind (dead with reason
fell_back and fallback_to set) is followed: the outcome is its successor's.

With --json, it prints one object with the keys state, id, kind, key, attempts, reason,
last_error, result, next_attempt_at, enqueued_at, started_at, finished_at, run_at,
duplicate_of, fallback_of and fallback_to, all present ("" or null when empty); run_at is set
for a scheduled job only. duplicate_of names the job
that did the work when this job was a duplicate of its idempotency key; fallback_to names the
job on the fallback kind that took this one over, and fallback_of the job it replaced.

Exit codes:
  0  the job was found (with --wait: it succeeded)
  1  error, such as NATS or Postgres unreachable
  2  usage error
  3  unknown job id: not in the stream and not in the ledger
  4  the job is dead (only with --wait)
  5  --wait ended before the job reached a final state`,
		Example: `  enqueue status 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue status 01JC9X3V8J4T6M2Q7R5W0YBZ1N --json
  id=$(enqueue publish noop '{}') && enqueue status "$id" --wait 30s
  enqueue status 01JC9X3V8J4T6M2Q7R5W0YBZ1N --wait 1m --json | jq .result`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd, conn, o, args[0])
		},
	}
	fs := cmd.Flags()
	fs.BoolVar(&o.json, "json", false, "print the status as JSON")
	fs.DurationVar(&o.wait, "wait", 0, "wait up to this long for a final state (succeeded or dead), e.g. 30s; 0 means don't wait")
	return cmd
}

func runStatus(cmd *cobra.Command, conn *cli.Connection, o statusOptions, id string) error {
	if err := queue.ValidateID(id); err != nil {
		return &cli.UsageError{Err: err}
	}
	if o.wait < 0 {
		return cli.Usagef("invalid --wait %s: give a duration such as 30s, or 0 not to wait", o.wait)
	}
	ctx := cmd.Context()
	c, cfg, err := openClient(ctx, conn, clientNeeds{db: true})
	if err != nil {
		return err
	}
	defer c.Close()
	lk := &lookup{client: c, cfg: cfg}
	defer lk.close()

	st, err := lk.status(ctx, id)
	if err != nil {
		return err
	}
	timedOut := false
	if o.wait > 0 && !settled(st) {
		st, timedOut, err = waitFinal(ctx, lk, st, o.wait)
		if err != nil {
			return err
		}
	}
	if err := printStatus(cmd.OutOrStdout(), st, o.json, time.Now()); err != nil {
		return err
	}
	switch {
	case o.wait == 0:
		return nil
	case timedOut:
		return &cli.ExitCodeError{Code: exitTimeout, Err: fmt.Errorf("job %s is still %s after --wait %s", id, st.State, o.wait)}
	case st.State == levee.StateDead:
		return &cli.ExitCodeError{Code: exitDead, Err: fmt.Errorf("job %s is dead: %s", id, cmp.Or(st.Reason, "no reason recorded"))}
	}
	return nil
}

// settled reports whether st is final and not handed to a fallback job: a job that fell back
// is followed to its successor, whose outcome is the job's.
func settled(st *levee.JobStatus) bool {
	return st.State.Final() && st.FallbackTo == ""
}

// waitFinal asks for the job's status every pollInterval until it is settled or wait has
// passed (timedOut), and returns the last status seen. It follows fallbacks. It stops early
// when ctx ends.
func waitFinal(ctx context.Context, lk *lookup, st *levee.JobStatus, wait time.Duration) (last *levee.JobStatus, timedOut bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	done := false
	every.Do(wctx, pollInterval, false, func(wctx context.Context) bool {
		id := st.ID
		if st.State.Final() && st.FallbackTo != "" {
			id = st.FallbackTo
		}
		next, lerr := lk.status(wctx, id)
		switch {
		case wctx.Err() != nil:
			return false // the wait ended during the call
		case lerr != nil:
			err = lerr
			return false
		}
		st = next
		done = settled(st)
		return !done
	})
	switch {
	case err != nil || done:
		return st, false, err
	case ctx.Err() != nil:
		return st, false, ctx.Err()
	}
	return st, true, nil
}

// lookup asks a Client for job status and turns "not found" into exit code 3.
type lookup struct {
	client *levee.Client
	cfg    levee.ClientConfig
}

func (lk *lookup) close() {}

// status returns job id's status, or an ExitCodeError with exitNotFound.
func (lk *lookup) status(ctx context.Context, id string) (*levee.JobStatus, error) {
	st, err := lk.client.Status(ctx, id)
	if errors.Is(err, levee.ErrJobNotFound) {
		// The job may have moved from the stream to the ledger between the two reads of one
		// call (a worker finished it): the ledger is read first, so one more call finds it.
		st, err = lk.client.Status(ctx, id)
	}
	if errors.Is(err, levee.ErrJobNotFound) {
		msg := fmt.Errorf("job %s not found: not in the stream and not in the ledger (check --namespace)", id)
		if lk.cfg.DatabaseURL == "" {
			msg = fmt.Errorf("job %s not found: not in the stream (without --database-url, running and finished jobs cannot be seen)", id)
		}
		return nil, &cli.ExitCodeError{Code: exitNotFound, Err: msg}
	}
	if err != nil {
		return nil, fmt.Errorf("status of job %s: %w", id, err)
	}
	return st, nil
}

// printStatus writes st as JSON, or as an aligned "field: value" block without empty fields.
// now makes next_attempt_at and run_at relative.
func printStatus(w io.Writer, st *levee.JobStatus, asJSON bool, now time.Time) error {
	if asJSON {
		return json.NewEncoder(w).Encode(st)
	}
	type field struct{ name, value string }
	ts := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05.000 MST")
	}
	next := ts(st.NextAttempt)
	if st.NextAttempt != nil {
		if d := st.NextAttempt.Sub(now).Round(100 * time.Millisecond); d > 0 {
			next += fmt.Sprintf(" (in %s)", d)
		} else {
			next += " (due)"
		}
	}
	runAt := ""
	if st.RunAt != nil {
		runAt = ts(st.RunAt)
		if d := st.RunAt.Sub(now).Round(100 * time.Millisecond); d > 0 {
			runAt += fmt.Sprintf(" (in %s)", d)
		} else {
			runAt += " (due: a running worker publishes it within a second)"
		}
	}
	fields := []field{
		{"state", string(st.State)},
		{"id", st.ID},
		{"kind", st.Kind},
		{"key", st.Key},
		{"attempts", fmt.Sprint(st.Attempts)},
		{"reason", st.Reason},
		{"last_error", st.LastError},
		{"result", string(st.Result)},
		{"next_attempt_at", next},
		{"run_at", runAt},
		{"enqueued_at", ts(st.EnqueuedAt)},
		{"started_at", ts(st.StartedAt)},
		{"finished_at", ts(st.FinishedAt)},
		{"duplicate_of", st.DuplicateOf},
		{"fallback_of", st.FallbackOf},
		{"fallback_to", st.FallbackTo},
	}
	width := 0
	for _, f := range fields {
		width = max(width, len(f.name))
	}
	var b strings.Builder
	for _, f := range fields {
		if f.value == "" || (f.name == "attempts" && st.Attempts == 0) {
			continue
		}
		pad := strings.Repeat(" ", width-len(f.name))
		value := strings.ReplaceAll(printable(f.value), "\n", "\n"+strings.Repeat(" ", width+2))
		fmt.Fprintf(&b, "%s:%s %s\n", f.name, pad, value)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
