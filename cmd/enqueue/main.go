// Command enqueue is Levee's operator CLI: it publishes jobs, reports their status, and
// manages the dead-letter queue.
//
//	enqueue publish KIND PAYLOAD     publish one job (PAYLOAD is JSON, or - for stdin);
//	                                 --delay 10m or --at TIME makes it wait in the ledger
//	enqueue publish KIND --file F    publish the jobs of a JSON Lines file
//	enqueue status ID                show what Levee knows of a job; --wait blocks until final
//	enqueue stats                    per-kind backlog, in flight, retrying, dead; DLQ by reason
//	enqueue dlq list|show|replay|purge|capture-orphans
//	                                 inspect dead jobs, replay them safely, purge them
//	enqueue bench                    publish and work N noop jobs through real workers; report rates
//	enqueue jobs|find                list the ledger's jobs; find a job by id or idempotency key
//	enqueue retry|cancel ID          run a dead, retrying or scheduled job now; cancel a scheduled,
//	                                 queued or retrying one
//	enqueue pause|resume KIND        stop and restart the fleet's pulls of a kind
//	enqueue breaker reset KIND       close a kind's circuit breaker on every worker
//	enqueue ui                       serve the web dashboard (package dashboard) on --addr
//
// Every command takes --nats-url, --database-url and --namespace (or LEVEE_NATS_URL,
// LEVEE_DATABASE_URL, LEVEE_NAMESPACE). Exit codes: 0 ok, 1 error, 2 usage; status adds 3 to 5.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // periodic jobs' time zones, on hosts without zoneinfo

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/queue"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the process exit code. stdin feeds
// `publish KIND -` and `--file -`.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetIn(stdin)
	cli.Prepare(root)
	return cli.Execute(ctx, root, args, stdout, stderr)
}

func newRootCmd() *cobra.Command {
	var conn cli.Connection
	root := &cobra.Command{
		Use:   "enqueue",
		Short: "Publish Levee jobs, query their status, manage the dead-letter queue",
		Long: `enqueue is Levee's operator CLI. It publishes jobs to NATS JetStream (now, or later through
the Postgres ledger), reports what Levee knows of a job (scheduled, waiting in the stream,
running, retrying, succeeded or dead), shows per-kind statistics, and lists, shows, replays
and purges dead jobs.

Publishing needs only NATS: producers keep working while Postgres or the downstream is down.
A delayed job (publish --delay or --at) waits in the Postgres ledger until it is due, so it
needs Postgres. Status, stats and replay read the Postgres ledger too.

Exit codes: 0 ok, 1 error, 2 usage error; see 'enqueue status --help' for status's own codes.`,
		Example: `  enqueue publish email '{"to":"ada@example.com"}'
  enqueue publish email --file jobs.jsonl
  enqueue publish reminder '{"user":42}' --delay 72h
  enqueue status 01JC9X3V8J4T6M2Q7R5W0YBZ1N --wait 30s
  enqueue stats --watch
  enqueue dlq list --reason max_attempts --since 1h
  enqueue dlq replay --all --kind charge --rate 50/s
  LEVEE_NATS_URL=nats://nats.internal:4222 enqueue publish noop '{}'`,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if err := queue.ValidateNamespace(conn.Namespace); err != nil {
				return &cli.UsageError{Err: err}
			}
			return nil
		},
	}
	cli.AddConnectionFlags(root, &conn, levee.DefaultNATSURL, levee.DefaultDatabaseURL, levee.DefaultNamespace)
	root.AddCommand(newPublishCmd(&conn), newStatusCmd(&conn))
	root.AddCommand(newStatsCmd(&conn))
	root.AddCommand(newDLQCmd(&conn))
	root.AddCommand(newBenchCmd(&conn))
	root.AddCommand(newOperatorCmds(&conn)...)
	root.AddCommand(newPeriodicCmd(&conn))
	root.AddCommand(newUICmd(&conn))
	return root
}

// clientConfig is the client configuration the connection flags give: NATS URL, credentials
// and TLS, and the namespace. Commands that need Postgres add DatabaseURL.
func clientConfig(conn *cli.Connection) (levee.ClientConfig, error) {
	opts, err := conn.NATSOptions()
	if err != nil {
		return levee.ClientConfig{}, err
	}
	return levee.ClientConfig{NATSURL: conn.NATSURL, NATSOptions: opts, Namespace: conn.Namespace}, nil
}

// clientNeeds says what a command's client connects to besides NATS.
type clientNeeds struct {
	// db connects to Postgres too.
	db bool
	// dbOptional, if set (with db), warns here when Postgres cannot be reached and goes on
	// without it.
	dbOptional io.Writer
	// withoutDB says what happens without Postgres, in dbOptional's warning.
	withoutDB string
	// quiet drops the client's log lines (the command prints what it did).
	quiet bool
	// maxPayload bounds published payloads (0: the default).
	maxPayload int
}

// openClient is the one way the commands connect: to NATS, and to Postgres as needs says. It
// returns the client and the configuration it was opened with; errors carry connection hints.
// openAdmin opens a client as openClient does and returns the operator API on it; closing lc
// closes both.
func openAdmin(ctx context.Context, conn *cli.Connection, needs clientNeeds) (c *admin.Client, lc *levee.Client, err error) {
	lc, _, err = openClient(ctx, conn, needs)
	if err != nil {
		return nil, nil, err
	}
	return admin.New(lc), lc, nil
}

func openClient(ctx context.Context, conn *cli.Connection, needs clientNeeds) (*levee.Client, levee.ClientConfig, error) {
	cfg, err := clientConfig(conn)
	if err != nil {
		return nil, cfg, err
	}
	if needs.db {
		cfg.DatabaseURL = conn.DatabaseURL
	}
	if needs.quiet {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.MaxPayload = needs.maxPayload
	c, err := levee.NewClient(ctx, cfg)
	var connErr *pgconn.ConnectError
	if needs.db && needs.dbOptional != nil && errors.As(err, &connErr) {
		fmt.Fprintf(needs.dbOptional, "enqueue: warning: %v; %s\n", err, cmp.Or(needs.withoutDB, "showing the queues without the ledger's counts"))
		cfg.DatabaseURL = ""
		c, err = levee.NewClient(ctx, cfg)
	}
	if err != nil {
		return nil, cfg, cli.ConnectHint(err)
	}
	return c, cfg, nil
}
