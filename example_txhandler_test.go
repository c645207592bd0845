package levee_test

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/levee-dev/levee"
)

// A transactional handler: its writes commit in the same transaction that records the job's
// success, so they happen exactly once with it, or not at all.
func Example_txHandler() {
	natsURL, dbURL, ns, cleanup := exampleServices()
	defer cleanup()
	stop, err := startExampleWorker(natsURL, dbURL, ns, func(w *levee.Worker) error {
		return w.HandleTx("invoice", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
			if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+ns+`.invoices (key text PRIMARY KEY)`); err != nil {
				return nil, err
			}
			_, err := tx.Exec(ctx, `INSERT INTO `+ns+`.invoices VALUES ($1)`, job.Key)
			return nil, err
		}), levee.Policy{})
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
	res, err := c.Publish(context.Background(), "invoice", map[string]int{"cents": 990}, levee.WithKey("inv-7"))
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := waitFinal(c, res.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(st.State, st.Key)
	// Output: succeeded inv-7
}
