package levee_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/leveetype"
)

// Operator actions: a job that failed for good is in the dead-letter queue with its reason;
// once the cause is fixed it is replayed under the same key.
func Example_operatorActions() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	var fixed atomic.Bool
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.Handle("sync", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			if !fixed.Load() {
				return nil, levee.Permanent(errors.New("account not found"))
			}
			return "synced", nil
		}), levee.Policy{Concurrency: 1})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ops := admin.New(c) // the operator API, on c's connections
	res, err := c.Publish(context.Background(), "sync", map[string]string{"account": "acme"}, levee.WithKey("sync-acme"))
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := waitFinal(c, res.ID); err != nil {
		fmt.Println(err)
		return
	}
	var dead *leveetype.DeadJob
	for range 100 { // the dead-letter copy follows the ledger's outcome
		if dead, err = ops.DeadJobGet(context.Background(), res.ID); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(dead.Reason, dead.LastError)

	fixed.Store(true)
	if _, err := ops.DeadJobReplay(context.Background(), *dead, admin.DeadJobReplayParams{}); err != nil {
		fmt.Println(err)
		return
	}
	st, err := waitFinal(c, res.ID)
	for err == nil && st.State != levee.StateSucceeded { // the replay revives the key first
		time.Sleep(50 * time.Millisecond)
		st, err = c.Status(context.Background(), res.ID)
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, string(st.Result))
	// Output:
	// permanent_error account not found
	// succeeded "synced"
}
