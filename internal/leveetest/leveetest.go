// Package leveetest gives tests the real services they need, isolated per test:
// Postgres and NATS from LEVEE_TEST_DATABASE_URL and LEVEE_TEST_NATS_URL, an embedded current
// NATS server from the nats-server/v2 library, and a fresh namespace (Postgres schema and
// stream names) per test so tests run in parallel without colliding.
//
// Where a variable is unset and a Docker engine answers, the service is started in a container
// with testcontainers-go. Otherwise the test is skipped, except under CI=true, where a missing
// service fails the test: CI never passes by skipping.
package leveetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// Environment variables naming the services tests use.
const (
	EnvDatabaseURL = "LEVEE_TEST_DATABASE_URL"
	EnvNATSURL     = "LEVEE_TEST_NATS_URL"
)

// missing skips, or fails under CI=true, for a service that is not configured.
func missing(t testing.TB, what, env string) {
	t.Helper()
	msg := fmt.Sprintf("%s not configured: set %s (make test sets it to the local service)", what, env)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; under CI=true a missing service is a failure")
	}
	t.Skip(msg)
}

// DatabaseURL returns the test Postgres URL.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvDatabaseURL)
	if u == "" {
		u = containerPostgres(t)
	}
	if u == "" {
		missing(t, "Postgres", EnvDatabaseURL)
	}
	return u
}

// NATSURL returns the system NATS server's URL.
func NATSURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvNATSURL)
	if u == "" {
		u = containerNATS(t)
	}
	if u == "" {
		missing(t, "NATS", EnvNATSURL)
	}
	anchorOnce.Do(func() { anchor(u) })
	return u
}

// anchorOnce keeps one file stream on the system server for the test process (anchor).
var anchorOnce sync.Once

// anchor makes sure the system server keeps one file stream that no test deletes. NATS 2.9
// removes an account's store directory when its last stream is deleted, and a stream created
// at that moment by a test running beside it fails ("could not create storage directory",
// error 10049); with the anchor the directory is never empty. Best effort: a failure here
// shows up in the tests themselves.
func anchor(url string) {
	nc, err := nats.Connect(url, nats.Name("levee-test-anchor"))
	if err != nil {
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "LEVEE_TEST_ANCHOR", Subjects: []string{"levee-test-anchor"}, Storage: jetstream.FileStorage, MaxMsgs: 1,
		Description: "kept by Levee's tests so that NATS 2.9 never removes the account's store directory",
	})
}

// Namespace returns a fresh namespace for one test.
func Namespace(t testing.TB) string {
	t.Helper()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b)
}

var (
	poolsMu sync.Mutex
	pools   = map[string]*pgxpool.Pool{}
)

// Pool returns a pool on the test database, shared by the tests of a package.
func Pool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	u := DatabaseURL(t)
	poolsMu.Lock()
	defer poolsMu.Unlock()
	if p, ok := pools[u]; ok {
		return p
	}
	cfg, err := pgxpool.ParseConfig(u)
	require.NoError(t, err)
	cfg.MaxConns = 16
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Ping(ctx), "Postgres at %s", u)
	pools[u] = p
	return p
}

// Ledger migrates a fresh schema named ns and returns a ledger on it; the schema is dropped at
// cleanup.
func Ledger(t testing.TB, ns string) *idempotency.Ledger {
	t.Helper()
	return LedgerOn(t, Pool(t), ns)
}

// LedgerOn is Ledger through a pool of the caller's (one with its own settings).
func LedgerOn(t testing.TB, pool *pgxpool.Pool, ns string) *idempotency.Ledger {
	t.Helper()
	ctx := context.Background()
	_, err := idempotency.Migrate(ctx, pool, ns, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = idempotency.DropSchema(context.Background(), pool, ns) })
	l, err := idempotency.New(idempotency.Config{Pool: pool, Schema: ns})
	require.NoError(t, err)
	return l
}

// Server is a NATS server a test can run against.
type Server struct {
	Name string // "system" or "embedded"
	URL  string
}

// Servers returns the NATS servers every NATS-facing test runs against: the system server
// (Debian's 2.9.10 on these machines) and an embedded current one.
func Servers(t testing.TB) []Server {
	t.Helper()
	return []Server{{Name: "system", URL: NATSURL(t)}, {Name: "embedded", URL: EmbeddedURL(t)}}
}

// PrivateServers is Servers with an embedded server of the test's own, shut down at cleanup,
// for packages whose TestMain checks for leaked goroutines (the shared embedded server of
// EmbeddedURL outlives every test).
func PrivateServers(t testing.TB) []Server {
	t.Helper()
	return []Server{{Name: "system", URL: NATSURL(t)}, {Name: "embedded", URL: PrivateEmbedded(t)}}
}

// PrivateEmbedded starts a current NATS server for one test and shuts it down at cleanup.
func PrivateEmbedded(t testing.TB) string {
	t.Helper()
	s, err := StartEmbedded(t.TempDir(), -1)
	require.NoError(t, err)
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s.ClientURL()
}

var (
	embeddedOnce sync.Once
	embeddedURL  string
	embeddedErr  error
)

// EmbeddedURL returns the URL of an embedded NATS server with JetStream, shared by the tests
// of a package and stopped when the process exits.
func EmbeddedURL(t testing.TB) string {
	t.Helper()
	embeddedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "levee-nats-")
		if err != nil {
			embeddedErr = err
			return
		}
		var s *server.Server
		s, embeddedErr = StartEmbedded(dir, -1)
		if embeddedErr == nil {
			embeddedURL = s.ClientURL()
		}
	})
	require.NoError(t, embeddedErr, "start embedded NATS server")
	return embeddedURL
}

// StartEmbedded starts a NATS server with JetStream on loopback, storing under dir, on port
// (-1: a random free port).
func StartEmbedded(dir string, port int) (*server.Server, error) {
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, err
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS server not ready after 10s")
	}
	return s, nil
}

// Conn connects to url and closes the connection at cleanup.
func Conn(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("levee-test"))
	require.NoError(t, err, "connect to NATS at %s", url)
	t.Cleanup(nc.Close)
	return nc
}

// Queue returns a Queue in namespace ns on url with its streams created; they are deleted at
// cleanup.
func Queue(t testing.TB, url, ns string) *queue.Queue {
	t.Helper()
	q, err := queue.New(queue.Config{Conn: Conn(t, url), Namespace: ns})
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, q.EnsureStreams(ctx))
	t.Cleanup(func() { _ = q.DeleteStreams(context.Background()) })
	return q
}
