package levee_test

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/levee-dev/levee"
)

// Publishing: the idempotency key makes a job happen once however often it is published; a
// second job with the same key takes the first one's outcome instead of running.
func Example_publish() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	var calls atomic.Int32
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.Handle("email", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			return "sent", nil
		}), levee.Policy{Concurrency: 1})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	first, err := c.Publish(context.Background(), "email", map[string]string{"to": "ada@example.com"}, levee.WithKey("welcome-ada"))
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := waitFinal(c, first.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, st.Attempts, string(st.Result))

	again, err := c.Publish(context.Background(), "email", map[string]string{"to": "ada@example.com"}, levee.WithKey("welcome-ada"))
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err = waitFinal(c, again.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, st.DuplicateOf == first.ID, "calls:", calls.Load())
	// Output:
	// succeeded 1 "sent"
	// succeeded true calls: 1
}
