package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// The worker reaches a NATS server that requires TLS and credentials through the flags, and
// wrong credentials give a clear one-line error that does not show the password. Not parallel:
// it sets LEVEE_NATS_USER and LEVEE_NATS_PASSWORD, the way secrets should reach a worker.
func TestWorkerWithTLSAndCredentials(t *testing.T) {
	srv := leveetest.StartSecureEmbedded(t)
	ns := leveetest.Namespace(t)
	leveetest.Ledger(t, ns)
	db := leveetest.DatabaseURL(t)
	cfg := writeConfig(t, "kinds:\n  ping: {handler: noop}\n")

	code, _, stderr := runInProcess(t, "--config", cfg, "--nats-url", srv.URL, "--database-url", db, "--namespace", ns,
		"--http-addr", "", "--nats-tls-ca", srv.CAFile, "--nats-user", srv.User, "--nats-password", "wrong-pass")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "refused the credentials")
	require.NotContains(t, stderr, "wrong-pass")
	require.NotContains(t, stderr, srv.Password)

	code, _, stderr = runInProcess(t, "--config", cfg, "--nats-url", srv.URL, "--database-url", db, "--namespace", ns, "--http-addr", "")
	require.Equal(t, 1, code, "no TLS CA and no credentials")
	require.Contains(t, stderr, "connect to NATS")

	t.Setenv("LEVEE_NATS_USER", srv.User)
	t.Setenv("LEVEE_NATS_PASSWORD", srv.Password)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var exit int
	wg.Go(func() {
		exit = run(ctx, []string{"--config", cfg, "--nats-url", srv.URL, "--database-url", db, "--namespace", ns,
			"--http-addr", "", "--log-level", "error", "--nats-tls-ca", srv.CAFile}, &nopWriter{}, &nopWriter{})
	})
	client, err := levee.NewClient(context.Background(), levee.ClientConfig{
		NATSURL: srv.URL, DatabaseURL: db, Namespace: ns,
		NATSOptions: []nats.Option{nats.RootCAs(srv.CAFile), nats.UserInfo(srv.User, srv.Password)},
	})
	require.NoError(t, err)
	defer client.Close()
	res, err := client.Publish(context.Background(), "ping", map[string]int{"n": 1})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		st, err := client.Status(context.Background(), res.ID)
		return err == nil && st.State == levee.StateSucceeded
	}, 20*time.Second, 50*time.Millisecond)
	cancel()
	wg.Wait()
	require.Equal(t, 0, exit)
}

type nopWriter struct{}

func (*nopWriter) Write(p []byte) (int, error) { return len(p), nil }
