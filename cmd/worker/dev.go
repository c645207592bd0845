package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/cmd/internal/cli"
	"github.com/levee-dev/levee/internal/core"
)

// Dev mode (`worker --dev`) runs a worker on a laptop with nothing but Postgres installed: when
// no NATS server answers at --nats-url, the worker embeds one with JetStream, bound to loopback,
// for as long as it runs.

const (
	// devProbeTimeout bounds the check for an existing NATS server, and for Postgres.
	devProbeTimeout = time.Second
	// devReadyTimeout bounds the embedded server's start.
	devReadyTimeout = 10 * time.Second
	// defaultDevDir is where the embedded server keeps its streams, relative to the working
	// directory; .gitignore lists it.
	defaultDevDir = "./.levee/nats"
)

// startDev prepares dev mode for serve: it checks that Postgres answers (dev mode embeds NATS
// only), then points o.conn.NATSURL at the server startDevNATS finds or starts. stop shuts
// down what was started; call it after the worker has stopped.
func startDev(ctx context.Context, o *options, stderr io.Writer) (stop func(), err error) {
	if o.devNATSPort < 1 || o.devNATSPort > 65535 {
		return nil, cli.Usagef("invalid --dev-nats-port %d: use a TCP port from 1 to 65535", o.devNATSPort)
	}
	if o.devDir == "" {
		return nil, cli.Usagef("empty --dev-dir: give the directory for the embedded server's data")
	}
	if err := pingPostgres(ctx, o.conn.DatabaseURL); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("dev mode: %w; dev mode embeds NATS, but Postgres is still required: "+
			"start one (e.g. docker compose up -d postgres) or set --database-url or LEVEE_DATABASE_URL", err)
	}
	url, stop, err := startDevNATS(ctx, o.conn.NATSURL, o.devNATSPort, o.devDir, stderr)
	if err != nil {
		return nil, err
	}
	o.conn.NATSURL = url
	return stop, nil
}

// startDevNATS returns the URL of the NATS server dev mode runs against. When a server answers
// at url within devProbeTimeout, that is url and stop does nothing. Otherwise it starts an
// embedded server with JetStream on 127.0.0.1:port, storing under dir (created if missing),
// and stop shuts it down and waits until it has. Either way it tells stderr which server is
// used and how to publish to it.
func startDevNATS(ctx context.Context, url string, port int, dir string, stderr io.Writer) (natsURL string, stop func(), err error) {
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	probeErr := probeNATS(url)
	if probeErr == nil {
		fmt.Fprintf(stderr, "dev mode: using the existing NATS server at %s (it answered, so none is embedded); publish with: enqueue --nats-url %s publish noop '{}'\n",
			core.RedactURL(url), core.RedactURL(url))
		return url, func() {}, nil
	}
	if err := ctx.Err(); err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The server reports a taken port only after its ready timeout; ask the kernel first.
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("dev mode: no NATS answered at %s (%w), and %s is taken, so none can be embedded there: %w; pass another --dev-nats-port or --nats-url",
			core.RedactURL(url), probeErr, addr, err)
	}
	_ = ln.Close()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", nil, fmt.Errorf("dev mode: create %s: %w", dir, err)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "levee-dev",
		Host:       "127.0.0.1",
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoLog:      true,
		NoSigs:     true, // the worker's own signal handling drains, then stops the server
	})
	if err != nil {
		return "", nil, fmt.Errorf("dev mode: embedded NATS: %w", err)
	}
	s.Start()
	stop = func() {
		s.Shutdown()
		s.WaitForShutdown()
	}
	if !s.ReadyForConnections(devReadyTimeout) {
		stop()
		return "", nil, fmt.Errorf("dev mode: embedded NATS on %s not ready after %s", addr, devReadyTimeout)
	}
	if !s.JetStreamEnabled() {
		stop()
		return "", nil, fmt.Errorf("dev mode: embedded NATS on %s started without JetStream (is another server using %s?)", addr, dir)
	}
	natsURL = "nats://" + addr
	fmt.Fprintf(stderr, "dev mode: embedded NATS with JetStream at %s (data in %s); publish with: enqueue --nats-url %s publish noop '{}'\n",
		natsURL, dir, natsURL)
	return natsURL, stop, nil
}

// probeNATS reports whether a NATS server answers at url within devProbeTimeout.
func probeNATS(url string) error {
	nc, err := nats.Connect(url, nats.Name("levee-dev-probe"), nats.Timeout(devProbeTimeout), nats.NoReconnect())
	if err != nil {
		return err
	}
	nc.Close()
	return nil
}

// pingPostgres reports whether Postgres answers at dbURL within devProbeTimeout.
func pingPostgres(ctx context.Context, dbURL string) error {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("invalid database URL %s: %w", core.RedactURL(dbURL), err)
	}
	cfg.ConnectTimeout = devProbeTimeout
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err == nil {
		err = conn.Ping(ctx)
		_ = conn.Close(context.WithoutCancel(ctx))
	}
	if err != nil {
		return fmt.Errorf("connect to Postgres at %s: %w", core.RedactURL(dbURL), err)
	}
	return nil
}
