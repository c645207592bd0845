package levee_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// A TxHandler's writes commit with the job's success and only then: a failed attempt's writes
// are rolled back, and a redelivery after a lost ack does not run them again.
func TestTxHandlerWritesCommitWithSuccessOnly(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		pool := leveetest.Pool(t)
		table := pgx.Identifier{b.ns, "entries"}.Sanitize()
		_, err := pool.Exec(ctx, "CREATE TABLE "+table+" (job_id text, attempt int)")
		require.NoError(t, err)

		var calls, acksDropped atomic.Int32
		cfg := b.workerConfig(t)
		levee.SetSkipAck(&cfg, func(string) bool { return acksDropped.Add(1) == 1 })
		w, err := levee.NewWorker(cfg)
		require.NoError(t, err)
		require.NoError(t, w.HandleTx("book", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
			calls.Add(1)
			if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1, $2)", job.ID, job.Attempt); err != nil {
				return nil, err
			}
			if job.Attempt == 1 {
				return nil, errors.New("fails after writing") // this write must be rolled back
			}
			return map[string]int{"booked_on_attempt": job.Attempt}, nil
		}), levee.Policy{AckWait: time.Second, Backoff: levee.Backoff{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}}))
		run(t, w)

		res, err := b.client.Publish(ctx, "book", map[string]int{"n": 1})
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 2, st.Attempts)
		require.Equal(t, "fails after writing", st.LastError)

		// The first ack was dropped: wait for the redelivery to be acked without running.
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 20*time.Second, 50*time.Millisecond)
		require.EqualValues(t, 2, calls.Load())

		var rows, attempt int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*), max(attempt) FROM "+table).Scan(&rows, &attempt))
		require.Equal(t, 1, rows, "only the successful attempt's write committed")
		require.Equal(t, 2, attempt)
	})
}

// A TxHandler succeeds on a database whose default isolation is REPEATABLE READ or
// SERIALIZABLE, although heartbeats rewrite its key's row while it runs: its transaction runs
// at READ COMMITTED (design rule 13).
func TestTxHandlerUnderAStricterDefaultIsolation(t *testing.T) {
	t.Parallel()
	for _, level := range []string{"repeatable read", "serializable"} {
		t.Run(level, func(t *testing.T) {
			t.Parallel()
			eachServer(t, func(t *testing.T, b *bundle) {
				ctx := context.Background()
				pcfg, err := pgxpool.ParseConfig(leveetest.DatabaseURL(t))
				require.NoError(t, err)
				pcfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = level
				pool, err := pgxpool.NewWithConfig(ctx, pcfg)
				require.NoError(t, err)
				t.Cleanup(pool.Close)
				table := pgx.Identifier{b.ns, "bookings"}.Sanitize()
				_, err = pool.Exec(ctx, "CREATE TABLE "+table+" (job_id text)")
				require.NoError(t, err)

				var calls atomic.Int32
				cfg := b.workerConfig(t)
				cfg.Pool = pool
				w, err := levee.NewWorker(cfg)
				require.NoError(t, err)
				require.NoError(t, w.HandleTx("book", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
					calls.Add(1)
					if _, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES ($1)", job.ID); err != nil {
						return nil, err
					}
					time.Sleep(900 * time.Millisecond) // past a heartbeat (every 333ms), which rewrites the key's row
					return map[string]bool{"booked": true}, nil
				}), levee.Policy{AckWait: time.Second, MaxAttempts: 3,
					Backoff: levee.Backoff{Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}}))
				run(t, w)

				res, err := b.client.Publish(ctx, "book", map[string]int{"n": 1})
				require.NoError(t, err)
				st := b.waitFinal(t, res.ID, 30*time.Second)
				require.Equal(t, levee.StateSucceeded, st.State, "last error: %s", st.LastError)
				require.Equal(t, 1, st.Attempts)
				require.EqualValues(t, 1, calls.Load())
			})
		})
	}
}

// A TxHandler whose transaction cannot commit for a reason of its own fails its attempt: the
// attempt is counted and retried with backoff, and the job dies after max_attempts (found by
// review: it used to be given back uncounted and rerun at once, forever). Two ways in:
//   - deferred: a write that violates a DEFERRABLE INITIALLY DEFERRED constraint (checked at
//     COMMIT);
//   - aborted: a statement fails and the handler returns success anyway (FinishTx then fails
//     with 25P02, "current transaction is aborted").
func TestTxHandlerWhoseTransactionCannotCommitFailsItsAttempts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		work func(ctx context.Context, tx pgx.Tx, table string) (any, error)
	}{
		{"deferred", func(ctx context.Context, tx pgx.Tx, table string) (any, error) {
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1)") // violates one_per_slot at COMMIT
			return nil, err
		}},
		{"aborted", func(ctx context.Context, tx pgx.Tx, table string) (any, error) {
			_, _ = tx.Exec(ctx, "INSERT INTO "+table+" VALUES ('not a number')") // error ignored
			return "done", nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := leveetest.Servers(t)[0]
			b := setup(t, srv)
			ctx := context.Background()
			pool := leveetest.Pool(t)
			table := pgx.Identifier{b.ns, "bookings"}.Sanitize()
			_, err := pool.Exec(ctx, "CREATE TABLE "+table+" (slot int, CONSTRAINT one_per_slot UNIQUE (slot) DEFERRABLE INITIALLY DEFERRED)")
			require.NoError(t, err)
			_, err = pool.Exec(ctx, "INSERT INTO "+table+" VALUES (1)")
			require.NoError(t, err)

			var calls atomic.Int32
			w, err := levee.NewWorker(b.workerConfig(t))
			require.NoError(t, err)
			require.NoError(t, w.HandleTx("book", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
				calls.Add(1)
				return tc.work(ctx, tx, table)
			}), levee.Policy{AckWait: time.Second, MaxAttempts: 3, MaxDeliveries: 20,
				Backoff: levee.Backoff{Base: 500 * time.Millisecond, Max: 500 * time.Millisecond}}))
			run(t, w)

			res, err := b.client.Publish(ctx, "book", map[string]int{"slot": 1})
			require.NoError(t, err)
			st := b.waitFinal(t, res.ID, 30*time.Second)
			time.Sleep(2 * time.Second) // a hot loop would show by now
			require.Equal(t, int32(3), calls.Load(), "a transaction that cannot commit is a failed attempt: max_attempts calls")
			require.Equal(t, levee.StateDead, st.State)
			require.Equal(t, "max_attempts", st.Reason)
			require.Equal(t, 3, st.Attempts)
			require.Contains(t, st.LastError, "the handler's transaction did not commit")
		})
	}
}

// A TxHandler whose session is killed while it works (a DBA's cron terminating sessions idle in
// transaction, pgbouncer's idle_transaction_timeout, a NAT dropping a long-idle connection)
// fails the same way on every attempt: each counts, and the job dies after max_attempts
// (design rule 0: a transaction that does not commit is a failed attempt). Found by review:
// it was given back uncounted, and called again forever.
func TestTxHandlerWhoseSessionIsKilledFailsItsAttempts(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	ctx := context.Background()
	killer := leveetest.Pool(t)

	var calls atomic.Int32
	w, err := levee.NewWorker(b.workerConfig(t))
	require.NoError(t, err)
	require.NoError(t, w.HandleTx("book", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
		calls.Add(1)
		var pid int32
		if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return nil, err
		}
		// ... a long downstream call while the transaction is idle; meanwhile its session is
		// terminated from outside, as a cron job killing long idle-in-transaction sessions does.
		if _, err := killer.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
		return "booked", nil
	}), levee.Policy{AckWait: 2 * time.Second, MaxAttempts: 2, MaxDeliveries: 50,
		Backoff: levee.Backoff{Base: 100 * time.Millisecond, Max: 100 * time.Millisecond}}))
	run(t, w)

	res, err := b.client.Publish(ctx, "book", map[string]int{"slot": 1})
	require.NoError(t, err)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		st, err := b.client.Status(ctx, res.ID)
		if err == nil && st.State.Final() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := b.client.Status(ctx, res.ID)
	require.NoError(t, err)
	t.Logf("after 15s: state %s, attempts %d, handler calls %d, last error %q", st.State, st.Attempts, calls.Load(), st.LastError)
	require.True(t, st.State.Final(), "a transaction that cannot commit on any attempt must spend the attempt budget (max_attempts 2); the job is still %s after %d calls",
		st.State, calls.Load())
	require.LessOrEqual(t, calls.Load(), int32(2), "max_attempts is 2")
}

// A HandleTx job whose COMMIT takes a while (a deferred constraint trigger, a synchronous
// standby lagging) holds its key's row meanwhile; the heartbeat skips that row instead of
// waiting, so the other attempts of the kind keep their leases and are never called again
// (found by review: they were cancelled once the COMMIT had lasted the lease).
func TestSlowTxCommitDoesNotCancelItsNeighbours(t *testing.T) {
	t.Parallel()
	srv := leveetest.Servers(t)[0]
	b := setup(t, srv)
	ctx := context.Background()
	pool := leveetest.Pool(t)
	table := pgx.Identifier{b.ns, "imports"}.Sanitize()
	fn := pgx.Identifier{b.ns, "slow_check"}.Sanitize()
	for _, q := range []string{
		"CREATE TABLE " + table + " (n int)",
		"CREATE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(5); RETURN NULL; END $$",
		"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON " + table + " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION " + fn + "()",
	} {
		_, err := pool.Exec(ctx, q)
		require.NoError(t, err)
	}

	var slowCalls, neighbourCalls atomic.Int32
	started := make(chan struct{}, 8)
	w, err := levee.NewWorker(b.workerConfig(t))
	require.NoError(t, err)
	require.NoError(t, w.HandleTx("book", levee.TxHandlerFunc(func(ctx context.Context, tx pgx.Tx, job *levee.Job) (any, error) {
		var in struct{ Slow bool }
		if err := job.Decode(&in); err != nil {
			return nil, err
		}
		if in.Slow {
			slowCalls.Add(1)
			_, err := tx.Exec(ctx, "INSERT INTO "+table+" VALUES (1)") // its COMMIT takes 5 s
			return "imported", err
		}
		neighbourCalls.Add(1)
		started <- struct{}{}
		select { // a 7 s downstream call
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(7 * time.Second):
			return "called", nil
		}
	}), levee.Policy{AckWait: 2 * time.Second, MaxAttempts: 3, MaxDeliveries: 20, Timeout: 20 * time.Second}))
	run(t, w)

	neighbour, err := b.client.Publish(ctx, "book", map[string]bool{"slow": false})
	require.NoError(t, err)
	<-started
	slow, err := b.client.Publish(ctx, "book", map[string]bool{"slow": true})
	require.NoError(t, err)

	stN := b.waitFinal(t, neighbour.ID, 60*time.Second)
	stS := b.waitFinal(t, slow.ID, 60*time.Second)
	t.Logf("neighbour: %s after %d calls (ledger attempts %d); slow: %s after %d calls", stN.State, neighbourCalls.Load(), stN.Attempts, stS.State, slowCalls.Load())
	require.Equal(t, levee.StateSucceeded, stS.State)
	require.EqualValues(t, 1, neighbourCalls.Load(), "the neighbour's worker never lost Postgres: its handler must not be cancelled and called again")
}
