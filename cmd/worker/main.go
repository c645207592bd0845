// Command worker runs Levee jobs: it pulls jobs of the kinds in its config file from NATS
// JetStream and runs them through the built-in handlers (http, noop) with the Postgres ledger
// making each effect happen once. `worker --help` lists the settings.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // periodic jobs' time zones, on hosts without zoneinfo (distroless, scratch)

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		// Through a logger like the worker's own lines: JSON when stderr is not a terminal.
		logger, _ := cli.NewLogger(os.Stderr, "info")
		logger.Info("draining in-flight jobs (send the signal again to exit at once)", "signal", s.String())
		cancel()
		<-sigs
		logger.Warn("second signal: exiting now; unfinished jobs will be redelivered")
		os.Exit(130)
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program, testable in-process.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return cli.Execute(ctx, newRootCmd(), args, stdout, stderr)
}

// options are the process settings shared by the worker's commands.
type options struct {
	conn            cli.Connection
	config          string
	httpAddr        string
	logLevel        string
	shutdownTimeout string
	id              string
	maxPayload      int
	retention       string
	checkConfig     bool
	noMigrate       bool
	streamReplicas  int
	dev             bool
	devNATSPort     int
	devDir          string
}

func newRootCmd() *cobra.Command {
	o := &options{}
	root := &cobra.Command{
		Use:   "worker",
		Short: "Run Levee jobs from NATS JetStream, exactly once in effect",
		Long: `worker pulls jobs of the kinds in its config file from NATS JetStream and runs them with
the built-in handlers (http, noop). A Postgres ledger of idempotency keys makes each job's
effect happen once, even when a message is delivered twice or a worker dies mid-job.

At start it applies the ledger's migrations (under an advisory lock, so many workers may start
at once), creates the streams if missing and one durable consumer per kind. SIGTERM or SIGINT
drains: it stops pulling, lets in-flight jobs finish within --shutdown-timeout, hands back the
rest for redelivery and exits 0; a second signal exits at once.`,
		Example: `  worker --config examples/levee.yaml
  LEVEE_CONFIG=levee.yaml LEVEE_DATABASE_URL=postgres://levee@db/levee worker
  worker --config levee.yaml --check-config
  worker --dev --config examples/levee.yaml   # no NATS installed: embeds one
  worker migrate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return serve(cmd.Context(), cmd, o) },
	}
	cli.AddConnectionFlags(root, &o.conn, levee.DefaultNATSURL, levee.DefaultDatabaseURL, levee.DefaultNamespace)
	fs := root.Flags()
	fs.StringVar(&o.config, "config", "", "YAML file of kinds and their policies (required)")
	fs.StringVar(&o.httpAddr, "http-addr", "127.0.0.1:9090", "address for /healthz, /readyz and /metrics; loopback by default; empty turns it off")
	fs.StringVar(&o.shutdownTimeout, "shutdown-timeout", "30s", "how long in-flight jobs may finish after SIGTERM")
	fs.StringVar(&o.id, "id", "", "worker id in logs and dead-letter headers (default host-pid)")
	fs.IntVar(&o.maxPayload, "max-payload", 1<<20, "largest payload in bytes; larger messages are dead-lettered as malformed")
	fs.StringVar(&o.retention, "retention", "168h", "how long finished idempotency keys are kept before the reaper deletes them")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate --config, print the effective policy per kind and the next runs of each periodic job, and exit")
	fs.BoolVar(&o.noMigrate, "no-migrate", false, "do not apply migrations at start (run 'worker migrate' separately)")
	fs.IntVar(&o.streamReplicas, "stream-replicas", 1, "replicas of the streams created at start if missing (3 on a NATS cluster); existing streams are never changed")
	fs.BoolVar(&o.dev, "dev", false, "dev mode: if no NATS answers at --nats-url, embed one with JetStream on 127.0.0.1:--dev-nats-port (data in ./.levee/nats); Postgres is still required")
	fs.IntVar(&o.devNATSPort, "dev-nats-port", 4222, "port of the embedded NATS server in --dev mode")
	fs.StringVar(&o.devDir, "dev-dir", defaultDevDir, "directory of the embedded NATS server's data in --dev mode")
	_ = fs.MarkHidden("dev-dir")
	root.PersistentFlags().StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	cli.BindEnv(root, "config", "LEVEE_CONFIG")
	cli.BindEnv(root, "http-addr", "LEVEE_HTTP_ADDR")
	cli.BindEnv(root, "shutdown-timeout", "LEVEE_SHUTDOWN_TIMEOUT")
	cli.BindEnv(root, "id", "LEVEE_WORKER_ID")
	cli.BindEnv(root, "max-payload", "LEVEE_MAX_PAYLOAD")
	cli.BindEnv(root, "retention", "LEVEE_RETENTION")
	cli.BindEnv(root, "log-level", "LEVEE_LOG_LEVEL")
	cli.BindEnv(root, "stream-replicas", "LEVEE_STREAM_REPLICAS")
	cli.BindEnv(root, "dev", "LEVEE_DEV")
	cli.BindEnv(root, "dev-nats-port", "LEVEE_DEV_NATS_PORT")
	root.AddCommand(newMigrateCmd(o), newHealthCmd())
	cli.Prepare(root)
	return root
}
