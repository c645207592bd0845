package leveetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/modules/postgres"
	"github.com/testcontainers/testcontainers-go/wait"
)

// Where LEVEE_TEST_DATABASE_URL or LEVEE_TEST_NATS_URL is unset and a Docker engine answers,
// the services are started once per test binary with testcontainers-go (and removed by its
// reaper when the binary exits). Without Docker these return "" and the caller skips, or
// fails under CI=true.

var (
	dockerOnce sync.Once
	dockerOK   bool

	pgOnce sync.Once
	pgURL  string
	pgErr  error

	natsOnce sync.Once
	natsURL  string
	nErr     error
)

// containerStart bounds the start of one container, image pull included.
const containerStart = 2 * time.Minute

func dockerAnswers() bool {
	dockerOnce.Do(func() {
		p, err := testcontainers.NewDockerProvider()
		if err != nil {
			return
		}
		defer func() { _ = p.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		dockerOK = p.Health(ctx) == nil
	})
	return dockerOK
}

func containerPostgres(t testing.TB) string {
	t.Helper()
	if !dockerAnswers() {
		return ""
	}
	pgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), containerStart)
		defer cancel()
		c, err := postgres.Run(ctx, "postgres:16-alpine",
			postgres.WithDatabase("levee"), postgres.WithUsername("postgres"), postgres.WithPassword("postgres"),
			postgres.BasicWaitStrategies())
		if err != nil {
			pgErr = fmt.Errorf("start Postgres container: %w", err)
			return
		}
		pgURL, pgErr = c.ConnectionString(ctx, "sslmode=disable")
	})
	if pgErr != nil {
		t.Fatal(pgErr)
	}
	return pgURL
}

func containerNATS(t testing.TB) string {
	t.Helper()
	if !dockerAnswers() {
		return ""
	}
	natsOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), containerStart)
		defer cancel()
		c, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: testcontainers.ContainerRequest{
				Image:        "nats:2.10-alpine",
				Cmd:          []string{"-js"},
				ExposedPorts: []string{"4222/tcp"},
				WaitingFor:   wait.ForListeningPort("4222/tcp"),
			},
			Started: true,
		})
		if err != nil {
			nErr = fmt.Errorf("start NATS container: %w", err)
			return
		}
		ep, err := c.PortEndpoint(ctx, "4222/tcp", "nats")
		natsURL, nErr = ep, err
	})
	if nErr != nil {
		t.Fatal(nErr)
	}
	return natsURL
}
