package levee_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/levee-dev/levee"
)

// Transactional enqueue: the job is written in the caller's transaction, with the business
// change. Rolled back, neither exists; committed, a worker's dispatcher publishes the job and
// it runs once.
func ExampleClient_PublishTx() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	ctx := context.Background()
	// The ledger's tables exist once a worker started, or after `worker migrate`.
	if _, err := levee.Migrate(ctx, dbURL, ns, nil); err != nil {
		fmt.Println(err)
		return
	}
	charged := make(chan string, 2)
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			charged <- job.Key
			return nil, nil
		}), levee.Policy{})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pool.Close()
	c, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: natsURL, Pool: pool, Namespace: ns})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	// An order that fails after the job was written: rolled back, no job.
	_ = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := c.PublishTx(ctx, tx, "charge", map[string]int{"order": 1}, levee.WithKey("order-1")); err != nil {
			return err
		}
		return fmt.Errorf("out of stock")
	})
	// An order that commits: the job runs.
	var res levee.PublishResult
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		res, err = c.PublishTx(ctx, tx, "charge", map[string]int{"order": 2}, levee.WithKey("order-2"))
		return err
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := waitFinal(c, res.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(<-charged, st.State)
	// Output:
	// order-2 succeeded
}

// A delayed job waits in the ledger, reported as scheduled, until it is due.
func ExampleWithDelay() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	ctx := context.Background()
	if _, err := levee.Migrate(ctx, dbURL, ns, nil); err != nil {
		fmt.Println(err)
		return
	}
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.Handle("remind", levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return "sent", nil }), levee.Policy{})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	c, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	res, err := c.Publish(ctx, "remind", map[string]int{"user": 42}, levee.WithDelay(time.Second))
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := c.Status(ctx, res.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, st.RunAt.Equal(*res.RunAt))
	st, err = waitFinal(c, res.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, !st.FinishedAt.Before(*res.RunAt))
	// Output:
	// scheduled true
	// succeeded true
}

// A periodic job: each tick runs once across the fleet, with the key periodic:<name>:<tick>.
func ExampleWorker_Periodic() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	var mu sync.Mutex
	var keys []string
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		if err := w.Handle("heartbeat", levee.HandlerFunc(func(_ context.Context, job *levee.Job) (any, error) {
			mu.Lock()
			defer mu.Unlock()
			keys = append(keys, job.Key)
			return nil, nil
		}), levee.Policy{}); err != nil {
			return err
		}
		return w.Periodic(levee.PeriodicJob{Name: "ping", Kind: "heartbeat", Every: time.Second})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	time.Sleep(2500 * time.Millisecond)
	stop()
	mu.Lock()
	defer mu.Unlock()
	fmt.Println(len(keys) >= 2, strings.HasPrefix(keys[0], "periodic:ping:"))
	// Output:
	// true true
}
