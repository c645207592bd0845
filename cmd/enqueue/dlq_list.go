package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
	"github.com/levee-dev/levee/leveetype"
)

// defaultListLimit is how many dead jobs list shows unless --limit says otherwise.
const defaultListLimit = 100

// lastErrorWidth is how much of the last error a list line shows.
const lastErrorWidth = 60

// listOptions are dlq list's flags.
type listOptions struct {
	filter filterFlags
	limit  int
	json   bool
}

func newDLQListCmd(conn *cli.Connection) *cobra.Command {
	var o listOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List dead jobs, oldest first",
		Long: `List the jobs in the dead-letter queue in the order they reached it, oldest first: one line
each with its id, kind, reason, attempts, age (since it died) and the start of its last error.
Only NATS is needed.

With --json, it prints one JSON object per line instead, each as 'dlq show --json' prints it
(payload and headers included), and nothing at all for an empty queue.

--limit bounds the output (default 100, 0 for no limit); a note on stderr says when more
jobs matched.

Exit codes:
  0  ok, even when nothing matched
  1  error, such as NATS unreachable
  2  usage error: bad filter or duration`,
		Example: `  enqueue dlq list
  enqueue dlq list --kind charge --since 1h
  enqueue dlq list --reason max_attempts --older-than 7d --limit 0
  enqueue dlq list --json | jq -r 'select(.attempts > 3) | .id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDLQList(cmd, conn, o)
		},
	}
	fs := cmd.Flags()
	o.filter.add(fs)
	fs.IntVar(&o.limit, "limit", defaultListLimit, "show at most this many jobs; 0 means no limit")
	fs.BoolVar(&o.json, "json", false, "print one JSON object per line")
	return cmd
}

func runDLQList(cmd *cobra.Command, conn *cli.Connection, o listOptions) error {
	now := time.Now()
	f, err := o.filter.filter(now)
	if err != nil {
		return err
	}
	if o.limit < 0 {
		return cli.Usagef("invalid --limit %d: give a number of jobs, or 0 for no limit", o.limit)
	}
	ctx := cmd.Context()
	c, lc, err := openAdmin(ctx, conn, clientNeeds{}) // NATS only
	if err != nil {
		return err
	}
	defer lc.Close()

	stdout, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
	var table *deadJobTable
	if !o.json {
		table = newDeadJobTable(stdout, now)
	}
	n, more := 0, false
	for dj, err := range c.DeadJobList(ctx, f) {
		if err != nil {
			return fmt.Errorf("read the dead-letter queue: %w", err)
		}
		if o.limit > 0 && n == o.limit {
			more = true
			break
		}
		n++
		if table != nil {
			table.add(dj)
			continue
		}
		if err := json.NewEncoder(stdout).Encode(dj); err != nil {
			return err
		}
	}
	if table != nil {
		if n == 0 {
			fmt.Fprintln(stderr, "no dead jobs")
			return nil
		}
		if err := table.flush(); err != nil {
			return err
		}
	}
	if more {
		fmt.Fprintf(stderr, "showing the oldest %s; more match (--limit 0 shows all)\n", cli.Count(n, "dead job"))
	}
	return nil
}

// deadJobTable writes dead jobs as an aligned table: ID, KIND, REASON, ATTEMPTS, AGE, LAST ERROR.
type deadJobTable struct {
	tw  *tabwriter.Writer
	now time.Time
}

// newDeadJobTable starts a table on w; now dates the AGE column.
func newDeadJobTable(w io.Writer, now time.Time) *deadJobTable {
	t := &deadJobTable{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0), now: now}
	fmt.Fprintln(t.tw, "ID\tKIND\tREASON\tATTEMPTS\tAGE\tLAST ERROR")
	return t
}

func (t *deadJobTable) add(dj leveetype.DeadJob) {
	lastErr := oneLineTruncated(dj.LastError, lastErrorWidth)
	if lastErr == "" {
		lastErr = "-"
	}
	fmt.Fprintf(t.tw, "%s\t%s\t%s\t%d\t%s\t%s\n", dj.ID, dj.Kind, dj.Reason, dj.Attempts,
		age.Format(t.now.Sub(dj.FailedAt)), lastErr)
}

// flush writes the table out.
func (t *deadJobTable) flush() error { return t.tw.Flush() }

// control reports whether r is a control character a terminal may act on: C0 (but for tab and
// newline, which callers lay out), DEL and C1 (0x9b is a CSI on its own).
func control(r rune) bool {
	return r < ' ' && r != '\t' && r != '\n' || r == 0x7f || r >= 0x80 && r <= 0x9f
}

// printable is s with every control character written out as an escape (\x1b), so that text
// from a downstream (an error, a result) cannot move the cursor, recolour or retitle the
// terminal it is printed on; tabs and newlines stay.
func printable(s string) string {
	if !strings.ContainsFunc(s, control) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < 0x100 && control(r):
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// oneLineTruncated folds s onto one line (runs of white space and control characters become one
// space) and cuts it to at most width characters, ending with "…" when cut.
func oneLineTruncated(s string, width int) string {
	s = strings.Join(strings.FieldsFunc(s, func(r rune) bool {
		return r == ' ' || r == '\t' || r == '\n' || r == '\r' || control(r)
	}), " ")
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	runes := []rune(s)
	return string(runes[:width-1]) + "…"
}
