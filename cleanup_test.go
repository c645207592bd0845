package levee_test

import (
	"context"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

// cleanupNamespace removes an example's streams and schema.
func cleanupNamespace(natsURL, dbURL, ns string) {
	ctx := context.Background()
	if nc, err := nats.Connect(natsURL); err == nil {
		if q, err := queue.New(queue.Config{Conn: nc, Namespace: ns}); err == nil {
			_ = q.DeleteStreams(ctx)
		}
		nc.Close()
	}
	if pool, err := pgxpool.New(ctx, dbURL); err == nil {
		_ = idempotency.DropSchema(ctx, pool, ns)
		pool.Close()
	}
}
