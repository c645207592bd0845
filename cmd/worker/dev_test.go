package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/leveetest"
)

// signalBuffer is a writer safe for concurrent use that closes seen once what it holds
// contains want.
type signalBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
	once sync.Once
}

func newSignalBuffer(want string) *signalBuffer {
	return &signalBuffer{want: want, seen: make(chan struct{})}
}

func (b *signalBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if strings.Contains(b.buf.String(), b.want) {
		b.once.Do(func() { close(b.seen) })
	}
	return n, err
}

func (b *signalBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// listening reports whether something accepts connections on 127.0.0.1:port.
func listening(port int) bool {
	c, err := (&net.Dialer{Timeout: time.Second}).DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// devWorker is a worker running in-process in dev mode.
type devWorker struct {
	stderr *signalBuffer
	cancel context.CancelFunc
	done   chan int
}

// startDevWorker runs the worker with args in-process and waits until dev mode has said which
// NATS server it uses.
func startDevWorker(t *testing.T, args ...string) *devWorker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &devWorker{stderr: newSignalBuffer("publish with: "), cancel: cancel, done: make(chan int, 1)}
	go func() { w.done <- run(ctx, args, &bytes.Buffer{}, w.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(40 * time.Second):
			t.Errorf("worker did not stop")
		}
		if t.Failed() {
			t.Logf("worker stderr:\n%s", w.stderr.String())
		}
	})
	select {
	case <-w.stderr.seen:
	case code := <-w.done:
		w.done <- code
		t.Fatalf("worker exited with %d before dev mode was ready:\n%s", code, w.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("dev mode not ready after 30s:\n%s", w.stderr.String())
	}
	return w
}

// stop cancels the worker's context, as SIGTERM does, and returns its exit code.
func (w *devWorker) stop(t *testing.T) int {
	t.Helper()
	w.cancel()
	select {
	case code := <-w.done:
		w.done <- code // for cleanup
		return code
	case <-time.After(40 * time.Second):
		t.Fatalf("worker did not drain after cancel:\n%s", w.stderr.String())
		return -1
	}
}

// publishNoopAndWait publishes a noop job through natsURL and waits until it succeeded.
func publishNoopAndWait(t *testing.T, natsURL, dbURL, ns string) {
	t.Helper()
	ctx := context.Background()
	client, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	require.NoError(t, err)
	defer client.Close()
	res, err := client.Publish(ctx, "noop", map[string]string{"hello": "dev"})
	require.NoError(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := client.Status(ctx, res.ID)
		if err == nil && st.State.Final() {
			require.Equal(t, levee.StateSucceeded, st.State, "%+v", st)
			return
		}
		require.True(t, time.Now().Before(deadline), "job %s not finished: %+v %v", res.ID, st, err)
		time.Sleep(50 * time.Millisecond)
	}
}

// With no NATS at --nats-url, --dev embeds one on loopback, serves jobs published to it,
// and shuts it down after the worker drains.
func TestDevModeEmbedsNATS(t *testing.T) {
	t.Parallel()
	db, ns := leveetest.DatabaseURL(t), leveetest.Namespace(t)
	leveetest.Ledger(t, ns) // drops the schema at cleanup
	port := freePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	dir := filepath.Join(t.TempDir(), "nats")
	cfg := writeConfig(t, "kinds:\n  noop: {handler: noop}\n")

	w := startDevWorker(t, "--dev", "--dev-nats-port", strconv.Itoa(port), "--dev-dir", dir,
		"--nats-url", url, "--database-url", db, "--namespace", ns, "--config", cfg, "--http-addr", "")
	msg := w.stderr.String()
	require.Contains(t, msg, "dev mode: embedded NATS with JetStream at "+url+" (data in "+dir+")")
	require.Contains(t, msg, "publish with: enqueue --nats-url "+url+" publish noop '{}'")
	require.DirExists(t, filepath.Join(dir, "jetstream"), "JetStream stores under --dev-dir")

	publishNoopAndWait(t, url, db, ns)

	require.Equal(t, 0, w.stop(t), w.stderr.String())
	require.False(t, listening(port), "the embedded server stops with the worker")
}

// With a NATS server answering at --nats-url, --dev uses it and embeds nothing.
func TestDevModeUsesReachableNATS(t *testing.T) {
	t.Parallel()
	db, ns, natsURL := leveetest.DatabaseURL(t), leveetest.Namespace(t), leveetest.NATSURL(t)
	leveetest.Ledger(t, ns)
	leveetest.Queue(t, natsURL, ns) // deletes the streams at cleanup
	port := freePort(t)
	dir := filepath.Join(t.TempDir(), "nats")
	cfg := writeConfig(t, "kinds:\n  noop: {handler: noop}\n")

	w := startDevWorker(t, "--dev", "--dev-nats-port", strconv.Itoa(port), "--dev-dir", dir,
		"--nats-url", natsURL, "--database-url", db, "--namespace", ns, "--config", cfg, "--http-addr", "")
	msg := w.stderr.String()
	require.Contains(t, msg, "dev mode: using the existing NATS server at "+core.RedactURL(natsURL))
	require.NotContains(t, msg, "embedded NATS with JetStream")
	require.NoDirExists(t, dir, "nothing embedded, nothing stored")
	require.False(t, listening(port), "nothing embedded on --dev-nats-port")

	publishNoopAndWait(t, natsURL, db, ns)
	require.Equal(t, 0, w.stop(t), w.stderr.String())
}

// Dev mode embeds NATS only: an unreachable Postgres fails at once, says Postgres is still
// required, and starts nothing.
func TestDevModeNeedsPostgres(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	dir := filepath.Join(t.TempDir(), "nats")
	cfg := writeConfig(t, "kinds:\n  noop: {handler: noop}\n")
	code, _, stderr := runInProcess(t, "--dev", "--dev-nats-port", strconv.Itoa(port), "--dev-dir", dir,
		"--nats-url", "nats://127.0.0.1:1", "--database-url", "postgres://levee:s3cret@127.0.0.1:1/x?sslmode=disable",
		"--config", cfg, "--http-addr", "")
	require.Equal(t, 1, code, stderr)
	require.Contains(t, stderr, "Postgres is still required")
	require.Contains(t, stderr, "LEVEE_DATABASE_URL")
	require.NotContains(t, stderr, "s3cret", "passwords never appear in errors")
	require.NoDirExists(t, dir)
	require.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
}

func TestDevModeBadPortIsUsageError(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "kinds:\n  noop: {handler: noop}\n")
	for _, port := range []string{"0", "65536", "-1"} {
		code, _, stderr := runInProcess(t, "--dev", "--dev-nats-port", port, "--config", cfg, "--http-addr", "")
		require.Equal(t, 2, code, "port %s: %s", port, stderr)
		require.Contains(t, stderr, "--dev-nats-port")
	}
}

// A taken port fails fast with a message that names it, instead of waiting for the server.
func TestStartDevNATSPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer func() { _ = ln.Close() }()
	port := ln.Addr().(*net.TCPAddr).Port
	dir := filepath.Join(t.TempDir(), "nats")
	var stderr bytes.Buffer
	start := time.Now()
	_, stop, err := startDevNATS(context.Background(), "nats://127.0.0.1:1", port, dir, &stderr)
	require.Error(t, err)
	require.Nil(t, stop)
	require.Less(t, time.Since(start), 5*time.Second)
	require.Contains(t, err.Error(), "127.0.0.1:"+strconv.Itoa(port)+" is taken")
	require.Contains(t, err.Error(), "--dev-nats-port")
	require.Empty(t, stderr.String())
}

func TestStartDevNATSStopWaits(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	dir := filepath.Join(t.TempDir(), "nats")
	var stderr bytes.Buffer
	url, stop, err := startDevNATS(context.Background(), "nats://127.0.0.1:1", port, dir, &stderr)
	require.NoError(t, err)
	require.Equal(t, "nats://127.0.0.1:"+strconv.Itoa(port), url)
	require.NoError(t, probeNATS(url), "the embedded server answers")
	stop()
	require.False(t, listening(port), "stop returns once the server is down")
	stop() // idempotent
}
