package levee_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/levee-dev/levee"
)

// exampleServices returns the services `make test` points the tests at, and a private
// namespace for one example; cleanup removes the namespace's streams and schema.
func exampleServices() (natsURL, dbURL, ns string, cleanup func()) {
	natsURL = cmp.Or(os.Getenv("LEVEE_TEST_NATS_URL"), levee.DefaultNATSURL)
	dbURL = cmp.Or(os.Getenv("LEVEE_TEST_DATABASE_URL"), levee.DefaultDatabaseURL)
	ns = fmt.Sprintf("example%d", time.Now().UnixNano()%1e9)
	return natsURL, dbURL, ns, func() { cleanupNamespace(natsURL, dbURL, ns) }
}

// startExampleWorker runs a worker with one kind until the returned stop is called.
func startExampleWorker(natsURL, dbURL, ns string, register func(*levee.Worker) error) (stop func(), err error) {
	w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	if err := register(w); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			fmt.Println(err)
		}
	}, nil
}

// waitFinal polls a job's status until it is final (succeeded or dead).
func waitFinal(c *levee.Client, id string) (*levee.JobStatus, error) {
	for range 400 {
		st, err := c.Status(context.Background(), id)
		if err == nil && st.State.Final() {
			return st, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil, errors.New("timed out")
}
