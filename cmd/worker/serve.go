package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/config"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/worker"
)

func serve(ctx context.Context, cmd *cobra.Command, o *options) error {
	if o.config == "" {
		return cli.Usagef("no config file: pass --config FILE or set LEVEE_CONFIG (see examples/levee.yaml)")
	}
	shutdown, err := time.ParseDuration(o.shutdownTimeout)
	if err != nil || shutdown <= 0 {
		return cli.Usagef("invalid --shutdown-timeout %q: use a positive duration such as 30s", o.shutdownTimeout)
	}
	retention, err := time.ParseDuration(o.retention)
	if err != nil || retention <= 0 {
		return cli.Usagef("invalid --retention %q: use a positive duration such as 168h", o.retention)
	}
	if o.streamReplicas < 1 || o.streamReplicas > 5 {
		return cli.Usagef("invalid --stream-replicas %d: use 1 to 5 (3 on a NATS cluster)", o.streamReplicas)
	}
	if o.maxPayload <= 0 {
		return cli.Usagef("invalid --max-payload %d: use a positive number of bytes", o.maxPayload)
	}
	file, err := config.Load(o.config)
	if err != nil {
		return err
	}
	if o.checkConfig {
		printPolicies(cmd.OutOrStdout(), o.config, file)
		printPeriodic(cmd.OutOrStdout(), file, time.Now())
		return checkNATS(ctx, cmd.OutOrStdout(), o, file)
	}
	if o.dev {
		stopDev, err := startDev(ctx, o, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer stopDev() // after the worker has drained
	}
	logger, err := cli.NewLogger(cmd.ErrOrStderr(), o.logLevel)
	if err != nil {
		return err
	}
	natsOpts, err := o.conn.NATSOptions()
	if err != nil {
		return err
	}
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL:         o.conn.NATSURL,
		NATSOptions:     natsOpts,
		DatabaseURL:     o.conn.DatabaseURL,
		Namespace:       o.conn.Namespace,
		Logger:          logger,
		ID:              o.id,
		ShutdownTimeout: shutdown,
		MaxPayload:      o.maxPayload,
		Retention:       retention,
		SkipMigrate:     o.noMigrate,
		StreamReplicas:  o.streamReplicas,
	})
	if err != nil {
		return cli.Usagef("%v", err)
	}
	for _, k := range file.Kinds {
		h, err := handlerFor(k)
		if err != nil {
			return fmt.Errorf("config %s: kinds.%s: %w", o.config, k.Name, err)
		}
		if err := w.Handle(k.Name, h, k.Policy); err != nil {
			return fmt.Errorf("config %s: %w", o.config, err)
		}
	}
	for _, p := range file.Periodic {
		if err := w.Periodic(p); err != nil {
			return fmt.Errorf("config %s: %w", o.config, err)
		}
	}
	if o.httpAddr != "" {
		stop, err := serveHTTP(o.httpAddr, w.Handler())
		if err != nil {
			return err
		}
		defer stop()
		logger.Info("serving /healthz, /readyz and /metrics", "addr", o.httpAddr)
	}
	if err := w.Run(ctx); err != nil {
		return cli.ConnectHint(err)
	}
	return nil
}

// checkTimeout bounds --check-config's look at NATS.
const checkTimeout = 10 * time.Second

// checkNATS is --check-config's second half: when NATS answers at --nats-url, it checks the
// namespace's existing streams and the consumers of the file's kinds against what Levee relies
// on (design rule 34), as a start would, and prints each problem. It creates and changes
// nothing. A problem that would refuse the start fails the check (exit 1); warnings do not.
// When NATS does not answer, it says so and the check passes on the file alone.
func checkNATS(ctx context.Context, out io.Writer, o *options, file *config.File) error {
	natsOpts, err := o.conn.NATSOptions()
	if err != nil {
		return err
	}
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL: o.conn.NATSURL, NATSOptions: natsOpts, Namespace: o.conn.Namespace,
		StreamReplicas: o.streamReplicas,
	})
	if err != nil {
		return cli.Usagef("%v", err)
	}
	for _, k := range file.Kinds {
		if err := w.Handle(k.Name, levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil }), k.Policy); err != nil {
			return fmt.Errorf("config %s: %w", o.config, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	where := fmt.Sprintf("NATS at %s, namespace %s", core.RedactURL(o.conn.NATSURL), o.conn.Namespace)
	problems, err := w.CheckSetup(ctx)
	var ce *core.ConnectError
	if errors.As(err, &ce) {
		fmt.Fprintf(out, "\n%s: not reachable, streams and consumers not checked (%v)\n", where, ce.Err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("check streams and consumers on %s: %w", where, err)
	}
	fmt.Fprintf(out, "\n%s:\n", where)
	if len(problems) == 0 {
		fmt.Fprintln(out, "  streams and consumers: OK (missing ones are created at start)")
		return nil
	}
	fatal := 0
	for _, p := range problems {
		level := "warning"
		if p.Fatal {
			level, fatal = "error", fatal+1
		}
		fmt.Fprintf(out, "  %s: %s\n", level, p.Message)
	}
	if fatal > 0 {
		return fmt.Errorf("%d problem(s) with the streams or consumers on %s would refuse the start: %w", fatal, where, levee.ErrSetup)
	}
	return nil
}

func handlerFor(k config.Kind) (levee.Handler, error) {
	switch k.Handler {
	case config.HandlerHTTP:
		return builtin.NewHTTP(builtin.HTTPConfig{Allow: k.HTTPAllow})
	case config.HandlerNoop:
		return builtin.Noop, nil
	}
	return nil, fmt.Errorf("unknown handler %q", k.Handler)
}

func printPolicies(w io.Writer, path string, f *config.File) {
	fmt.Fprintf(w, "%s: OK, %s\n", path, cli.Count(len(f.Kinds), "kind"))
	for _, k := range f.Kinds {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "\n%s\n", k.Name)
		row := func(key, format string, args ...any) {
			fmt.Fprintf(tw, "  %s\t"+format+"\n", append([]any{key}, args...)...)
		}
		p := k.Policy
		row("handler", "%s", k.Handler)
		if p.Rate.IsZero() {
			row("rate", "none")
		} else {
			row("rate", "%s fleet-wide (burst %d), shared by the workers serving the kind", p.Rate, p.Burst)
		}
		row("concurrency", "%d per worker, %d across the fleet (fleet_concurrency)", p.Concurrency, p.FleetConcurrency)
		row("timeout", "%s per attempt", p.Timeout)
		row("max_attempts", "%d", p.MaxAttempts)
		row("backoff", "base %s, max %s, full jitter", p.Backoff.Base, p.Backoff.Max)
		b := p.Breaker
		row("breaker", "window %s, min_calls %d, failure_rate %g, open_for %s, half_open_calls %d, scope %s",
			b.Window, b.MinCalls, b.FailureRate, b.OpenFor, b.HalfOpenCalls, b.Scope)
		switch {
		case p.Fallback == "":
			row("fallback", "none (exhausted jobs go to the DLQ)")
		case p.FallbackAfter > 0:
			row("fallback", "%s, when attempts are exhausted or the breaker stays open %s", p.Fallback, p.FallbackAfter)
		default:
			row("fallback", "%s, when attempts are exhausted", p.Fallback)
		}
		row("ack_wait", "%s (lease; heartbeat every %s; JetStream AckWait %s)", p.AckWait, (p.AckWait / 3).Round(time.Millisecond),
			worker.ConsumerConfig(worker.Kind{Policy: p}).AckWait)
		row("max_deliveries", "%d", p.MaxDeliveries)
		if k.Handler == config.HandlerHTTP {
			allow := strings.Join(k.HTTPAllow, " ")
			if allow == "" {
				allow = "(none: every URL is refused)"
			}
			row("http.allow", "%s", allow)
		}
		_ = tw.Flush()
	}
}

// serveHTTP serves h on addr until stop is called.
func serveHTTP(addr string, h http.Handler) (stop func(), err error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --http-addr %s: %w (choose another address, or pass --http-addr '' to turn it off)", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			_ = srv.Close()
		}
	}, nil
}
