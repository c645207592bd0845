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

// A team's own worker binary: one handler per kind, a policy per kind, Run until the context
// ends. The example publishes a job with a Client and waits for its status.
// It needs the services `make test` points LEVEE_TEST_NATS_URL and LEVEE_TEST_DATABASE_URL at.
func Example_worker() {
	natsURL := cmp.Or(os.Getenv("LEVEE_TEST_NATS_URL"), levee.DefaultNATSURL)
	dbURL := cmp.Or(os.Getenv("LEVEE_TEST_DATABASE_URL"), levee.DefaultDatabaseURL)
	ns := fmt.Sprintf("example%d", time.Now().UnixNano()%1e9) // a private namespace for this run

	type charge struct {
		Customer string `json:"customer"`
		Cents    int    `json:"cents"`
	}
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	err = w.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		var c charge
		if err := job.Decode(&c); err != nil {
			return nil, levee.Permanent(err)
		}
		if c.Cents <= 0 {
			return nil, levee.Permanent(errors.New("amount must be positive"))
		}
		// A real handler calls its provider here, passing job.Key as the idempotency key.
		return map[string]any{"charged": c.Cents, "customer": c.Customer}, nil
	}), levee.Policy{MaxAttempts: 8, Timeout: 10 * time.Second})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			fmt.Println(err)
		}
		cleanupNamespace(natsURL, dbURL, ns)
	}()

	client, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()
	res, err := client.Publish(context.Background(), "charge", charge{"cus_1", 4200}, levee.WithKey("order-1001"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for range 200 {
		st, err := client.Status(context.Background(), res.ID)
		if err == nil && st.State.Final() {
			fmt.Println(st.State, st.Key, st.Attempts, string(st.Result))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("timed out")
	// Output: succeeded order-1001 1 {"charged": 4200, "customer": "cus_1"}
}
