//go:build unix

package chaos

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// parallel runs the scenarios side by side only at full counts (make chaos, alone on the
// machine). In make test they run one after the other: each starts several processes, and two
// at once load a 2-core machine enough to slow down the timing-sensitive tests of the packages
// tested alongside.
func parallel(t *testing.T) {
	if full() {
		t.Parallel()
	}
}

// settle bounds how long a scenario may take to finish its jobs after the faults.
func settle() time.Duration { return time.Duration(size(60, 300)) * time.Second }

func ids(specs []levee.JobSpec) []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.ID
	}
	return out
}

// killPoints returns n distinct charge counts in [lo, hi) of total, sorted: the moments, by
// progress, at which a scenario strikes.
func killPoints(total, n int, lo, hi float64) []int64 {
	pts := make([]int64, n)
	for i := range pts {
		pts[i] = int64(float64(total) * (lo + rand.Float64()*(hi-lo)))
	}
	slices.Sort(pts)
	return pts
}

// 1. kill -9 a random worker at random moments while the jobs run across 3 workers.
func TestChaosKillWorkers(t *testing.T) {
	parallel(t)
	r := newRig(t, "1 kill -9 workers", rigConfig{})
	defer r.dumpLogs()
	n, kills := size(200, 2000), size(3, 10)
	for range 3 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("kill", n)
	require.NoError(t, r.publish(ctx, specs))
	for _, at := range killPoints(n, kills, 0.05, 0.9) {
		r.waitCharged(ctx, at)
		// A random worker among those running (one may be coming back from the last kill).
		for _, i := range rand.Perm(len(r.workers)) {
			if w := r.workers[i]; r.kill(w) {
				t.Logf("kill -9 %s at %d charges", w.name, r.down.charged.Load())
				break
			}
		}
	}
	r.check(ids(specs), settle())
}

// 2. kill -9 right after the downstream call and before the ledger commit (test hook
// LEVEE_TEST_CRASH=after-call): the redelivery calls again with the same key, the provider
// makes no second charge, and the job succeeds once.
func TestChaosCrashAfterCall(t *testing.T) {
	parallel(t)
	r := newRig(t, "2 kill -9 after call, before commit", rigConfig{})
	defer r.dumpLogs()
	n, crashes := size(200, 2000), size(5, 20)
	for range 2 {
		r.startWorker("LEVEE_TEST_CRASH=after-call:crash")
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := append(r.jobs("job", n-crashes), r.jobs("crash", crashes)...)
	rand.Shuffle(len(specs), func(i, j int) { specs[i], specs[j] = specs[j], specs[i] })
	require.NoError(t, r.publish(ctx, specs))
	rp := r.check(ids(specs), settle())

	// A crash key's first attempt kills its worker after the call, unless another crash
	// killed the worker first (then its redelivery, attempt 2, does not crash): so at least
	// one crash, and every crash key called again after its first call, charged once.
	_, callsPerKey, _ := r.down.snapshot()
	again := 0
	for _, s := range r.jobs("crash", crashes) {
		if callsPerKey[s.ID] >= 2 {
			again++
		}
	}
	hooked := 0
	for _, f := range r.faults() {
		if f.Kind == faultDied {
			hooked++
		}
	}
	t.Logf("workers killed by the hook: %d; crash keys called again after a crash: %d of %d; repeated calls in all: %d",
		hooked, again, crashes, rp.RepeatedCalls)
	require.Positive(t, hooked, "no worker crashed after a call")
	require.Positive(t, again, "no crash key was called again after its worker died")
}

// 3. Zombie: SIGSTOP a worker past its lease and AckWait, let another finish its jobs, SIGCONT:
// the zombie writes nothing and acks nothing.
func TestChaosZombie(t *testing.T) {
	parallel(t)
	r := newRig(t, "3 zombie (SIGSTOP past lease)", rigConfig{concurrency: 5,
		minDelay: 200 * time.Millisecond, maxDelay: 400 * time.Millisecond})
	defer r.dumpLogs()
	n := size(60, 400)
	zombie := r.startWorker()
	r.startWorker()
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("zombie", n)
	require.NoError(t, r.publish(ctx, specs))
	r.waitLog(zombie, 0, `"job succeeded"`, 1)
	// Stop it while it has attempts in flight: each worker runs at most concurrency attempts,
	// so more keys running than that means some are the zombie's.
	keys := pgx.Identifier{r.ns, "keys"}.Sanitize()
	for {
		var running int
		require.NoError(t, r.pool.QueryRow(ctx, "SELECT count(*) FROM "+keys+" WHERE state = 'running'").Scan(&running))
		if running > r.cfg.concurrency {
			break
		}
		require.NoError(t, ctx.Err(), "the zombie never had attempts in flight")
		time.Sleep(10 * time.Millisecond)
	}
	cont := r.stop(zombie)
	stoppedAt := time.Now()
	t.Logf("SIGSTOP %s at %d charges", zombie.name, r.down.charged.Load())
	// Its jobs are taken over (fence 2) once lease and AckWait lapse: wait for one to succeed.
	for {
		var taken int
		require.NoError(t, r.pool.QueryRow(ctx, "SELECT count(*) FROM "+keys+" WHERE fence > 1 AND state = 'succeeded'").Scan(&taken))
		if taken > 0 && time.Since(stoppedAt) > 3*r.cfg.ackWait {
			break
		}
		require.NoError(t, ctx.Err(), "no job of the stopped worker was taken over")
		time.Sleep(200 * time.Millisecond)
	}
	offset := zombie.logSize()
	cont()
	t.Logf("SIGCONT %s after %s", zombie.name, time.Since(stoppedAt).Round(time.Millisecond))

	// Each attempt the zombie had in flight was taken over (fence > 1). Once awake, it must end
	// every one of them finding its lease lost: writing nothing, acking nothing.
	rows, err := r.pool.Query(ctx, "SELECT job_id FROM "+keys+" WHERE fence > 1")
	require.NoError(t, err)
	takenIDs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	r.waitLog(zombie, offset, "lease lost", len(takenIDs))
	r.check(ids(specs), settle())

	taken := map[string]bool{}
	for _, id := range takenIDs {
		taken[id] = true
	}
	lost, wrote := 0, 0
	for _, line := range zombie.logLines(offset) {
		var rec struct {
			Msg   string `json:"msg"`
			JobID string `json:"job_id"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if strings.Contains(rec.Msg, "lease lost") {
			lost++
		}
		if rec.Msg == "job succeeded" && taken[rec.JobID] {
			wrote++
			t.Errorf("zombie committed job %s, which another worker took over", rec.JobID)
		}
	}
	t.Logf("zombie after SIGCONT: %d attempts ended with their lease lost (nothing written, not acked); %d jobs taken over by the other worker %v",
		lost, len(takenIDs), takenIDs)
	require.Zero(t, wrote)
}

// 4. Restart the NATS server (kill -9, start on the same store, sync_interval: always) while
// jobs are published and run; publishers retry with the same ids.
func TestChaosRestartNATS(t *testing.T) {
	parallel(t)
	r := newRig(t, "4 NATS kill -9 and restart", rigConfig{})
	defer r.dumpLogs()
	n := size(300, 2000)
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("natsrestart", n)
	published := r.publishPaced(ctx, specs, 30*time.Millisecond)
	restarts := size(1, 3)
	for i := range restarts {
		r.waitPublished(ctx, int64(n*(i+1)/(restarts+1)))
		s := r.nats.servers[0]
		t.Logf("kill -9 %s at %d published, %d charges", s.name, r.published.Load(), r.down.charged.Load())
		r.killNATS(s)
		time.Sleep(time.Second)
		s.startAgain(t)
		waitJetStream(t, s)
		t.Logf("%s restarted on the same store", s.name)
	}
	require.NoError(t, <-published)
	r.check(ids(specs), settle())
	t.Logf("jobs published again after an error (same ids): %d", r.republished.Load())
}

// 5. Postgres connections cut for 5s mid-run (commits in flight included): no ack without a
// commit, every job finishes once, no key stays in progress.
func TestChaosCutPostgres(t *testing.T) {
	parallel(t)
	r := newRig(t, "5 Postgres cut 5s", rigConfig{})
	defer r.dumpLogs()
	n, cuts := size(300, 2000), size(1, 3)
	for range 2 {
		r.startWorker()
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("pgcut", n)
	require.NoError(t, r.publish(ctx, specs))
	for _, at := range killPoints(n, cuts, 0.1, 0.6) {
		r.waitCharged(ctx, max(at, r.down.charged.Load()+int64(n/20))) // work resumes between cuts
		t.Logf("cut Postgres at %d charges", r.down.charged.Load())
		restore := r.cutPostgres()
		time.Sleep(5 * time.Second)
		restore()
		t.Logf("Postgres restored at %d charges", r.down.charged.Load())
	}
	r.check(ids(specs), settle())
	t.Logf("commits that failed in the cut (not acked): %d; claims handed back: %d",
		r.grepLogs("commit outcome failed"), r.grepLogs("ledger unavailable"))
}

// 6. Poison jobs that crash every worker that takes them are dead-lettered via max
// deliveries, and the kind's other jobs are unaffected: one crashes the worker when it is
// pulled, before its key is claimed (LEVEE_TEST_CRASH=before-claim), the other inside every
// attempt (in-call). Healthy jobs pulled beside them lose deliveries and attempts in each
// crash, but their last chance runs alone in a worker (solo.go), so none runs out.
func TestChaosPoison(t *testing.T) {
	parallel(t)
	r := newRig(t, "6 poison jobs crash workers", rigConfig{maxAttempts: 2, maxDeliveries: 3})
	defer r.dumpLogs()
	n := size(100, 1000)
	for range 2 {
		r.startWorker("LEVEE_TEST_CRASH=before-claim:poison,in-call:crasher")
	}
	r.waitStarted()
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := append(r.jobs("poison", 1), r.jobs("crasher", 1)...)
	specs = append(specs, r.jobs("healthy", n-2)...)
	require.NoError(t, r.publish(ctx, specs))
	rp := r.check(ids(specs), settle())
	for i, poison := range specs[:2] {
		dj, err := r.ops.DeadJobGet(ctx, poison.ID)
		require.NoError(t, err, "the poison job %s is dead-lettered", poison.ID)
		t.Logf("poison job %s: dead, reason %s: %s", dj.ID, dj.Reason, dj.LastError)
		if i == 0 || dj.Reason != "max_attempts" {
			require.Equal(t, "max_deliveries", dj.Reason, "the poison job %s is dead-lettered via max deliveries", poison.ID)
			continue
		}
		// The crasher is claimed each time: when the advisory of its last delivery comes while
		// its (dead) worker's lease still runs, it is published again, and then its attempt
		// budget runs out first, the last attempt run alone.
		require.Contains(t, dj.LastError, "run alone, was lost too", "the crasher's last attempt ran alone")
	}
	var collateral []string
	for dj, err := range r.ops.DeadJobList(ctx, admin.DeadJobListParams{}) {
		require.NoError(t, err)
		if dj.ID != specs[0].ID && dj.ID != specs[1].ID {
			collateral = append(collateral, dj.ID+" ("+dj.Reason+": "+dj.LastError+")")
			// What the workers said about it, beside their starts and exits.
			for _, l := range r.linesAbout(dj.ID) {
				t.Logf("collateral %s: %s", dj.ID, l)
			}
		}
	}
	require.Empty(t, collateral, "healthy jobs dead-lettered with the poison jobs")
	require.Equal(t, n-2, rp.Succeeded)
	t.Logf("last chances run alone: %d; jobs published again without one: %d",
		r.grepLogs("last chance: running the job alone"), r.grepLogs("without having run alone"))
}

// 7. A cluster of 3 NATS servers with R3 streams: kill -9 the jobs stream's leader mid-run;
// work continues and nothing is lost.
func TestChaosClusterKillServer(t *testing.T) {
	parallel(t)
	r := newRig(t, "7 R3 cluster, leader kill -9", rigConfig{natsServers: 3})
	defer r.dumpLogs()
	n := size(300, 2000)
	for range 2 {
		r.startWorker()
	}
	r.waitStarted() // the workers create the streams with 3 replicas before the client exists
	r.connectClient()
	ctx, cancel := context.WithTimeout(context.Background(), settle())
	defer cancel()
	specs := r.jobs("cluster", n)
	published := r.publishPaced(ctx, specs, 30*time.Millisecond)
	r.waitPublished(ctx, int64(n/2))
	leader := r.streamLeader()
	for _, s := range r.nats.servers {
		if s.name == leader {
			t.Logf("kill -9 %s (leader of the jobs stream) at %d charges", s.name, r.down.charged.Load())
			r.killNATS(s)
		}
	}
	require.NoError(t, <-published)
	r.check(ids(specs), settle())
	t.Logf("jobs published again after an error (same ids): %d", r.republished.Load())
}

// streamLeader names the server leading the jobs stream's replicas.
func (r *rig) streamLeader() string {
	t := r.t
	t.Helper()
	names, err := queue.NewNames(r.ns)
	require.NoError(t, err)
	nc := leveetest.Conn(t, r.nats.url())
	js, err := nc.JetStream()
	require.NoError(t, err)
	si, err := js.StreamInfo(names.JobsStream(), nats.MaxWait(5*time.Second))
	require.NoError(t, err)
	require.NotNil(t, si.Cluster, "the jobs stream should be clustered")
	require.Len(t, si.Cluster.Replicas, 2, "the jobs stream should have 3 replicas")
	return si.Cluster.Leader
}
