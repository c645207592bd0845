package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/internal/jsonview"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// showOptions are dlq show's flags.
type showOptions struct {
	json bool
}

func newDLQShowCmd(conn *cli.Connection) *cobra.Command {
	var o showOptions
	cmd := &cobra.Command{
		Use:   "show ID",
		Short: "Show everything about one dead job",
		Long: `Show dead job ID: its kind, idempotency key, reason, attempts, last error, when it first failed
and when it died (with how long ago), the worker that dead-lettered it, its position in the
DLQ stream, its headers and its payload, pretty-printed. Only NATS is needed.

The headers listed are the job's own (Nats-Msg-Id, Levee-Enqueued-At, Levee-Max-Attempts, ...);
the dead-letter headers appear as the fields above them. A malformed job's payload, which is
not JSON, is shown as a JSON string of its bytes.

With --json, it prints one object with the keys id, kind, key, reason, attempts, last_error,
first_failed_at, failed_at, worker, payload, headers and dlq_seq.

Exit codes:
  0  ok
  1  error, such as NATS unreachable
  2  usage error
  3  ID is not in the dead-letter queue`,
		Example: `  enqueue dlq show 01JC9X3V8J4T6M2Q7R5W0YBZ1N
  enqueue dlq show 01JC9X3V8J4T6M2Q7R5W0YBZ1N --json | jq .payload`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDLQShow(cmd, conn, o, args[0])
		},
	}
	cmd.Flags().BoolVar(&o.json, "json", false, "print the dead job as JSON")
	return cmd
}

func runDLQShow(cmd *cobra.Command, conn *cli.Connection, o showOptions, id string) error {
	if err := queue.ValidateID(id); err != nil {
		return &cli.UsageError{Err: err}
	}
	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, clientNeeds{}) // NATS only
	if err != nil {
		return err
	}
	defer lc.Close()
	dj, err := c.DeadJobGet(ctx, id)
	if errors.Is(err, levee.ErrJobNotFound) {
		return &cli.ExitCodeError{Code: exitNotFound, Err: notInDLQ(id)}
	}
	if err != nil {
		return fmt.Errorf("read dead job %s: %w", id, err)
	}
	if o.json {
		return json.NewEncoder(cmd.OutOrStdout()).Encode(dj)
	}
	return printDeadJob(cmd.OutOrStdout(), dj, time.Now())
}

// fieldHeaders are the dead-letter headers that printDeadJob shows as fields, not headers. It
// leaves out the Nats-Expected-* publish checks too.
var fieldHeaders = []string{
	queue.HeaderJobID, queue.HeaderKind, queue.HeaderKey, queue.HeaderReason, queue.HeaderAttempts,
	queue.HeaderLastError, queue.HeaderFirstFailedAt, queue.HeaderFailedAt, queue.HeaderWorker,
}

// printDeadJob writes dj as an aligned "field: value" block, then its other headers and its
// payload, indented. Times are shown in now's location, with their age at now.
func printDeadJob(w io.Writer, dj *leveetype.DeadJob, now time.Time) error {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.In(now.Location()).Format("2006-01-02 15:04:05.000 MST") + " (" + age.Format(now.Sub(t)) + " ago)"
	}
	fields := [][2]string{
		{"id", dj.ID},
		{"kind", dj.Kind},
		{"key", dj.Key},
		{"reason", dj.Reason},
		{"attempts", fmt.Sprint(dj.Attempts)},
		{"last_error", dj.LastError},
		{"first_failed_at", ts(dj.FirstFailedAt)},
		{"failed_at", ts(dj.FailedAt)},
		{"worker", dj.Worker},
		{"dlq_seq", fmt.Sprint(dj.Sequence)},
	}
	var b strings.Builder
	width := 0
	for _, f := range fields {
		width = max(width, len(f[0]))
	}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		value := strings.ReplaceAll(printable(f[1]), "\n", "\n"+strings.Repeat(" ", width+2))
		fmt.Fprintf(&b, "%s:%s %s\n", f[0], strings.Repeat(" ", width-len(f[0])), value)
	}

	var names []string
	for name := range dj.Headers {
		if !slices.Contains(fieldHeaders, name) && !strings.HasPrefix(name, "Nats-Expected-") {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	if len(names) > 0 {
		b.WriteString("headers:\n")
		hw := 0
		for _, name := range names {
			hw = max(hw, len(name))
		}
		for _, name := range names {
			fmt.Fprintf(&b, "  %s:%s %s\n", printable(name), strings.Repeat(" ", hw-len(name)), printable(dj.Headers[name]))
		}
	}

	b.WriteString("payload:\n")
	pretty := jsonview.Indent(jsonview.RedactHeaders(dj.Payload), "  ", "  ") // bounded: json.Indent is quadratic in the nesting
	if pretty == "" {
		pretty = "null"
	}
	b.WriteString("  ")
	b.WriteString(printable(pretty))
	b.WriteString("\n")
	_, err := io.WriteString(w, b.String())
	return err
}
