// Command worker is the README's worker binary with a handler of your own: it serves the
// "charge" kind, and /healthz, /readyz and /metrics on 127.0.0.1:9090.
package main

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/levee-dev/levee"
)

type Charge struct {
	Customer string `json:"customer"`
	Cents    int    `json:"cents"`
}

func main() {
	w, err := levee.NewWorker(levee.WorkerConfig{
		NATSURL:     os.Getenv("LEVEE_NATS_URL"),     // default nats://127.0.0.1:4222
		DatabaseURL: os.Getenv("LEVEE_DATABASE_URL"), // default local Postgres
		Namespace:   os.Getenv("LEVEE_NAMESPACE"),    // default "levee": streams and schema
	})
	if err != nil {
		log.Fatal(err)
	}
	err = w.Handle("charge", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
		var c Charge
		if err := job.Decode(&c); err != nil {
			return nil, levee.Permanent(err) // dead-lettered at once, never retried
		}
		if c.Cents <= 0 {
			return nil, levee.Permanent(errors.New("amount must be positive"))
		}
		// Call the provider with job.Key as its idempotency key; return an error to retry,
		// levee.RetryAfter(d, err) to set the delay. levee.CheckLease(ctx) right before an
		// irreversible call says whether this worker still holds the job.
		return map[string]any{"charged": c.Cents}, nil
	}), levee.Policy{MaxAttempts: 8, Timeout: 10 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	// /healthz, /readyz (503 until Run has connected) and /metrics, for probes and Prometheus.
	ops := &http.Server{Addr: "127.0.0.1:9090", Handler: w.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := ops.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Print(err)
		}
	}()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx); err != nil { // migrates, serves, drains on signal
		log.Fatal(err)
	}
	_ = ops.Close()
}
