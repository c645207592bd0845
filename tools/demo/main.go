// Command demo supports `make demo`: `demo downstream ADDR` serves a small payment-provider-like
// HTTP API that fails some calls, and `demo reset NAMESPACE` removes a namespace's streams and
// schema so the demo starts clean. It is a development tool, not part of Levee.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/core"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "freeport" {
		port, err := freePort()
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
		fmt.Println(port)
		return
	}
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: demo downstream ADDR | demo reset NAMESPACE | demo freeport")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "downstream":
		err = downstream(ctx, os.Args[2])
	case "reset":
		err = reset(ctx, os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// freePort returns a loopback TCP port that nothing listens on now.
func freePort() (int, error) {
	ln, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// downstream answers by path: /ok → 200; /flaky → 503 (Retry-After: 1) for a key's first two
// calls, then 200; /reject → 400; /fixable → 422 until POST /admin/fix, then 200. Effects are
// applied once per Idempotency-Key, as a payment provider does.
func downstream(ctx context.Context, addr string) error {
	var (
		mu      sync.Mutex
		calls   = map[string]int{}
		effects = map[string]bool{}
		fixed   atomic.Bool
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /admin/fix", func(w http.ResponseWriter, _ *http.Request) {
		fixed.Store(true)
		_, _ = io.WriteString(w, "fixed\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		calls[r.URL.Path+key]++
		n := calls[r.URL.Path+key]
		mu.Unlock()
		status := http.StatusOK
		switch r.URL.Path {
		case "/flaky":
			if n <= 2 {
				w.Header().Set("Retry-After", "1")
				status = http.StatusServiceUnavailable
			}
		case "/reject":
			status = http.StatusBadRequest
		case "/fixable":
			if !fixed.Load() {
				status = http.StatusUnprocessableEntity
			}
		}
		if status == http.StatusOK {
			mu.Lock()
			repeat := effects[key]
			effects[key] = true
			mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"charged": true, "repeat": %t}`, repeat)
			return
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "%s (call %d for this key)", http.StatusText(status), n)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		return err
	}
	return nil
}

// reset removes the namespace's streams and Postgres schema.
func reset(ctx context.Context, ns string) error {
	natsURL := envOr("LEVEE_NATS_URL", levee.DefaultNATSURL)
	dbURL := envOr("LEVEE_DATABASE_URL", levee.DefaultDatabaseURL)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", core.RedactURL(natsURL), err)
	}
	defer nc.Close()
	q, err := queue.New(queue.Config{Conn: nc, Namespace: ns})
	if err != nil {
		return err
	}
	if err := q.DeleteStreams(ctx); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	return idempotency.DropSchema(ctx, pool, ns)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
