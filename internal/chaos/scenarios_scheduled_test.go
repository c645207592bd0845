//go:build unix

package chaos

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
)

// 13. Transactional and delayed jobs through the dispatchers (design rules 42 and 43): jobs
// published with PublishBatchTx in committed transactions, a quarter of them delayed, while a
// worker is killed right after its dispatcher published due jobs and before it deleted their
// rows (LEVEE_TEST_CRASH=after-dispatch, once per key): another dispatcher publishes them
// again, the stream (by id) and the ledger (by key) drop the second publish, and each job
// succeeds once. Jobs of rolled-back transactions never run.
func TestChaosCrashAfterDispatch(t *testing.T) {
	parallel(t)
	r := newRig(t, "13 kill -9 after dispatch, before mark", rigConfig{})
	defer r.dumpLogs()
	once := t.TempDir()
	for range 2 {
		r.startWorker("LEVEE_TEST_CRASH=after-dispatch:txcrash", "LEVEE_TEST_CRASH_ONCE_DIR="+once)
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	n, crashes := size(200, 2000), size(5, 20)
	specs := append(r.jobs("txjob", n-crashes), r.jobs("txcrash", crashes)...)
	rand.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
	for i := range specs {
		if i%4 == 0 {
			specs[i].Delay = time.Duration(200+rand.IntN(800)) * time.Millisecond
		}
	}
	rolled := r.jobs("rolled", 40)
	for start := 0; start < len(specs); start += 20 {
		chunk := specs[start:min(start+20, len(specs))]
		require.NoError(t, pgx.BeginFunc(ctx, r.pool, func(tx pgx.Tx) error {
			res, err := r.client.PublishBatchTx(ctx, tx, chunk)
			for _, pr := range res {
				require.NoError(t, pr.Err)
			}
			return err
		}))
		if k := start / 20; k < len(rolled)/4 {
			tx, err := r.pool.Begin(ctx)
			require.NoError(t, err)
			_, err = r.client.PublishBatchTx(ctx, tx, rolled[4*k:4*k+4])
			require.NoError(t, err)
			require.NoError(t, tx.Rollback(ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.published.Add(int64(len(specs)))
	rp := r.check(ids(specs), settle())
	_ = rp

	hooked := 0
	for _, f := range r.faults() {
		if f.Kind == faultDied {
			hooked++
		}
	}
	_, callsPerKey, _ := r.down.snapshot()
	for _, s := range rolled {
		require.Zero(t, callsPerKey[s.ID], "job %s of a rolled-back transaction was called", s.ID)
		_, err := r.client.Status(ctx, s.ID)
		require.ErrorIs(t, err, levee.ErrJobNotFound, "job %s of a rolled-back transaction", s.ID)
	}
	t.Logf("workers killed after a dispatch: %d", hooked)
	require.Positive(t, hooked, "no worker was killed after a dispatch")
}
