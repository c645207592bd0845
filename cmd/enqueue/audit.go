package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/age"
)

// maxAuditLimit bounds --limit of audit.
const maxAuditLimit = 10_000

type auditOptions struct {
	since string
	limit int
	json  bool
}

func newAuditCmd(conn *cli.Connection) *cobra.Command {
	var o auditOptions
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit log of operator actions, newest first",
		Long: `Show the ledger's audit log, newest first: every operator action of the CLI (retry, cancel,
pause, resume, breaker reset, dlq replay, dlq purge) and of the dashboard, with when, who
(--as, or the dashboard's user) and on what.

With --json, it prints one JSON object per line: {"at", "actor", "action", "target", "detail"}.

` + listExitCodes,
		Example: `  enqueue audit
  enqueue audit --since 24h
  enqueue audit --json --limit 1000 | jq -r 'select(.action == "dlq.purge") | .target'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var since time.Duration
			if o.since != "" {
				d, err := age.Parse(o.since)
				if err != nil {
					return cli.Usagef("invalid --since %q: %w", o.since, err)
				}
				since = d
			}
			if o.limit < 1 || o.limit > maxAuditLimit {
				return cli.Usagef("invalid --limit %d: give 1 to %d", o.limit, maxAuditLimit)
			}
			ctx := cmd.Context()
			c, lc, err := openAdmin(ctx, conn, operatorNeeds)
			if err != nil {
				return err
			}
			defer lc.Close()
			entries, err := c.AuditList(ctx, o.limit)
			if err != nil {
				return operatorError(err)
			}
			now := time.Now()
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			if !o.json {
				fmt.Fprintln(tw, "AT\tACTOR\tACTION\tTARGET\tDETAIL")
			}
			n := 0
			for _, e := range entries {
				if since > 0 && now.Sub(e.At) > since {
					break // newest first: the rest is older still
				}
				n++
				if o.json {
					b, err := json.Marshal(e)
					if err != nil {
						return err
					}
					fmt.Fprintln(out, string(b))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format("2006-01-02 15:04:05"), printable(string(e.Actor)),
					printable(e.Action), printable(e.Target), oneLineTruncated(e.Detail, lastErrorWidth))
			}
			if o.json {
				return nil
			}
			if n == 0 {
				fmt.Fprintln(cmd.ErrOrStderr(), "no operator actions")
				return nil
			}
			return tw.Flush()
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.since, "since", "", "only actions within the last DURATION, e.g. 24h or 7d")
	fs.IntVar(&o.limit, "limit", 50, fmt.Sprintf("at most this many actions (1 to %d)", maxAuditLimit))
	fs.BoolVar(&o.json, "json", false, "print JSON Lines")
	return cmd
}
