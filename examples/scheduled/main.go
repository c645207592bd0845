// Command scheduled is the README's delayed and transactional publisher: a job that runs in
// three days, one at a given time, and one written in the same transaction as an order.
package main

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/levee-dev/levee"
)

func main() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("LEVEE_DATABASE_URL")) // the ledger's database
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	c, err := levee.NewClient(ctx, levee.ClientConfig{
		NATSURL: os.Getenv("LEVEE_NATS_URL"), Pool: pool, Namespace: os.Getenv("LEVEE_NAMESPACE"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Delayed: the job waits in the ledger (state scheduled) until its run_at.
	res, err := c.Publish(ctx, "dunning-email", map[string]string{"invoice": "inv_7"}, levee.WithDelay(72*time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("job %s runs at %s", res.ID, res.RunAt) // a time in the past runs now: RunAt is nil
	nine := time.Date(2026, 12, 24, 9, 0, 0, 0, time.UTC)
	if _, err := c.Publish(ctx, "capture", map[string]string{"auth": "A-77"}, levee.WithRunAt(nine)); err != nil {
		log.Fatal(err)
	}

	// Transactional: the job exists only if the order commits, and then runs once.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total) VALUES ($1, $2)`, "o-1001", 4200); err != nil {
			return err
		}
		_, err := c.PublishTx(ctx, tx, "charge", map[string]any{"order": "o-1001"}, levee.WithKey("order-o-1001"))
		return err // an error rolls back both the order and the job
	})
	if err != nil {
		log.Fatal(err)
	}
}
