package levee_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/levee-dev/levee"
)

// Status: a job is queued until a worker takes it, then running, then final; its result is
// kept with its status.
func Example_status() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	res, err := c.Publish(context.Background(), "resize", map[string]int{"width": 640})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := c.Status(context.Background(), res.ID) // no worker serves "resize" yet
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State)

	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.Handle("resize", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			var in struct{ Width int }
			if err := job.Decode(&in); err != nil {
				return nil, levee.Permanent(err)
			}
			return map[string]int{"height": in.Width * 3 / 4}, nil
		}), levee.Policy{})
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	st, err = waitFinal(c, res.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, st.Attempts, string(st.Result))
	_, err = c.Status(context.Background(), "no-such-job")
	fmt.Println(errors.Is(err, levee.ErrJobNotFound))
	// Output:
	// queued
	// succeeded 1 {"height": 480}
	// true
}
