// Command enqueue is Levee's operator CLI: it publishes jobs, reports their status, and
// manages the dead-letter queue.
//
//	enqueue publish KIND PAYLOAD     publish one job (PAYLOAD is JSON, or - for stdin)
//	enqueue publish KIND --file F    publish the jobs of a JSON Lines file
//	enqueue status ID                show what Levee knows of a job; --wait blocks until final
//	enqueue stats                    per-kind backlog, in flight, retrying, dead; DLQ by reason
//	enqueue dlq list|show|replay|purge|capture-orphans
//	                                 inspect dead jobs, replay them safely, purge them
//	enqueue bench                    publish and work N noop jobs through real workers; report rates
//	enqueue jobs|find                list the ledger's jobs; find a job by id or idempotency key
//	enqueue retry|cancel ID          run a dead or retrying job again; cancel a queued or retrying one
//	enqueue pause|resume KIND        stop and restart the fleet's pulls of a kind
//	enqueue breaker reset KIND       close a kind's circuit breaker on every worker
//	enqueue ui                       serve the web dashboard (package dashboard) on --addr
//
// Every command takes --nats-url, --database-url and --namespace (or LEVEE_NATS_URL,
// LEVEE_DATABASE_URL, LEVEE_NAMESPACE). Exit codes: 0 ok, 1 error, 2 usage; status adds 3 to 5.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/cli"
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
		Long: `enqueue is Levee's operator CLI. It publishes jobs to NATS JetStream, reports what Levee
knows of a job (waiting in the stream, running, retrying, succeeded or dead), shows per-kind
statistics, and lists, shows, replays and purges dead jobs.

Publishing needs only NATS: producers keep working while Postgres or the downstream is down.
Status, stats and replay read the Postgres ledger too.

Exit codes: 0 ok, 1 error, 2 usage error; see 'enqueue status --help' for status's own codes.`,
		Example: `  enqueue publish email '{"to":"ada@example.com"}'
  enqueue publish email --file jobs.jsonl
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
