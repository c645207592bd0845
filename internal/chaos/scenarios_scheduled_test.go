//go:build unix

package chaos

import (
	"context"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
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

// 14. Periodic ticks with three worker processes (design rule 45): an every: 1s job, catch_up
// all, in the config of three workers; one worker is stopped (SIGTERM) and comes back; then
// every worker is stopped for 4 s and started again. Every tick from the first to the last
// calls the downstream once: none twice, however many workers run, and none missed (a
// restart keeps the next tick; the catch-up runs the downtime's ticks).
func TestChaosPeriodicTicksOnce(t *testing.T) {
	parallel(t)
	r := newRig(t, "14 periodic ticks, 3 workers, restart and downtime", rigConfig{periodicEvery: time.Second})
	defer r.dumpLogs()
	var ws []*proc
	for range 3 {
		ws = append(ws, r.startWorker())
	}
	r.waitStarted()
	time.Sleep(3 * time.Second)
	ws[0].terminate(false) // comes back after its restart delay
	time.Sleep(3 * time.Second)
	for _, w := range ws {
		w.terminate(true)
	}
	time.Sleep(4 * time.Second)
	for _, w := range ws {
		offset := w.logSize()
		w.startAgain(t)
		r.waitLog(w, offset, "worker started", 1)
	}
	time.Sleep(3 * time.Second)
	for _, w := range ws {
		w.terminate(true)
	}

	_, callsPerKey, _ := r.down.snapshot()
	var ticks []time.Time
	for key, n := range callsPerKey {
		at, ok := strings.CutPrefix(key, "periodic:tick:")
		if !ok {
			continue
		}
		require.Equal(t, 1, n, "tick %s called %d times", key, n)
		tick, err := time.Parse(time.RFC3339, at)
		require.NoError(t, err)
		ticks = append(ticks, tick)
	}
	slices.SortFunc(ticks, time.Time.Compare)
	t.Logf("%d ticks called, from %s to %s", len(ticks), ticks[0].Format(time.TimeOnly), ticks[len(ticks)-1].Format(time.TimeOnly))
	require.GreaterOrEqual(t, len(ticks), 12, "ticks over about 14 s")
	for i := 1; i < len(ticks); i++ {
		require.Equal(t, time.Second, ticks[i].Sub(ticks[i-1]), "a tick missing between %s and %s", ticks[i-1], ticks[i])
	}
}

// terminate stops the process with SIGTERM (a graceful drain) and waits until it is gone;
// with stay it is not restarted (startAgain starts it).
func (p *proc) terminate(stay bool) {
	p.mu.Lock()
	exited := p.exited
	p.killing = true
	if stay {
		p.stopped = true
	}
	sent := p.signalLocked(syscall.SIGTERM)
	p.mu.Unlock()
	if sent && exited != nil {
		<-exited
	}
}
