package levee_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/internal/worker"
)

// These tests are the resilience rules (16–22) and failure scenarios 9 and 11 of docs/design.md, run through
// the built-in http kind against a downstream that records the time of every call and how many
// calls were in flight at once.

// callRecorderConfig says how a callRecorder answers.
type callRecorderConfig struct {
	// Status answers the call-th call for key, made at at. Nil answers 200.
	Status func(key string, call int, at time.Time) int
	// Hold keeps each request this long before answering.
	Hold time.Duration
	// Hang, if not nil, keeps each request until it is closed (or the caller gives up).
	Hang <-chan struct{}
}

// callRecorder is a downstream that records every call (key, time, status), the 2xx answers
// per key (an idempotent provider's effects), and the most calls it held at once.
type callRecorder struct {
	*httptest.Server
	cfg callRecorderConfig

	mu          sync.Mutex
	calls       []recordedCall
	perKey      map[string]int
	oks         map[string]int
	inFlight    int
	maxInFlight int
}

type recordedCall struct {
	key    string
	at     time.Time
	status int
}

func newCallRecorder(t *testing.T, cfg callRecorderConfig) *callRecorder {
	t.Helper()
	d := &callRecorder{cfg: cfg, perKey: map[string]int{}, oks: map[string]int{}}
	d.Server = httptest.NewServer(http.HandlerFunc(d.serve))
	t.Cleanup(d.Close)
	return d
}

func (d *callRecorder) serve(w http.ResponseWriter, r *http.Request) {
	key, now := r.Header.Get("Idempotency-Key"), time.Now()
	d.mu.Lock()
	d.perKey[key]++
	status := http.StatusOK
	if d.cfg.Status != nil {
		status = d.cfg.Status(key, d.perKey[key], now)
	}
	d.calls = append(d.calls, recordedCall{key: key, at: now, status: status})
	d.inFlight++
	d.maxInFlight = max(d.maxInFlight, d.inFlight)
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inFlight--
		d.mu.Unlock()
	}()

	if d.cfg.Hold > 0 {
		t := time.NewTimer(d.cfg.Hold)
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		t.Stop()
	}
	if d.cfg.Hang != nil {
		select {
		case <-d.cfg.Hang:
		case <-r.Context().Done():
			return
		}
	}
	if status/100 == 2 {
		d.mu.Lock()
		d.oks[key]++
		d.mu.Unlock()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"ok":true}`))
}

// Calls counts the calls made for key.
func (d *callRecorder) Calls(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.perKey[key]
}

// OKs counts the 2xx answers given for key: more than one is a second effect.
func (d *callRecorder) OKs(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.oks[key]
}

// Total counts every call.
func (d *callRecorder) Total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.calls)
}

// Keys counts the distinct keys called.
func (d *callRecorder) Keys() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.perKey)
}

// CallsBefore counts the calls made before t, and the distinct keys they were for.
func (d *callRecorder) CallsBefore(t time.Time) (calls, keys int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	seen := map[string]bool{}
	for _, c := range d.calls {
		if c.at.Before(t) {
			calls++
			seen[c.key] = true
		}
	}
	return calls, len(seen)
}

// Times returns the times of all calls, sorted.
func (d *callRecorder) Times() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	ts := make([]time.Time, len(d.calls))
	for i, c := range d.calls {
		ts[i] = c.at
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	return ts
}

// InFlight is the number of requests held now; MaxInFlight the most held at once.
func (d *callRecorder) InFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inFlight
}

func (d *callRecorder) MaxInFlight() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxInFlight
}

// maxInWindow returns the most of the sorted times that fall in any window [t, t+w).
func maxInWindow(times []time.Time, w time.Duration) int {
	most, j := 0, 0
	for i := range times {
		for j < len(times) && times[j].Sub(times[i]) < w {
			j++
		}
		most = max(most, j-i)
	}
	return most
}

// callJob is an http job payload that POSTs to url's /call.
func callJob(url string, n int) map[string]any {
	return map[string]any{"url": url + "/call", "body": map[string]int{"n": n}}
}

// publishCalls publishes n http jobs of kind to url with keys prefix-0 … prefix-(n-1) in one
// batch and returns their results.
func publishCalls(t *testing.T, b *bundle, kind, url, prefix string, n int) []levee.PublishResult {
	t.Helper()
	specs := make([]levee.JobSpec, n)
	for i := range specs {
		specs[i] = levee.JobSpec{Kind: kind, Payload: callJob(url, i), Key: fmt.Sprintf("%s-%d", prefix, i)}
	}
	res, err := b.client.PublishBatch(context.Background(), specs, nil)
	require.NoError(t, err)
	for _, r := range res {
		require.NoError(t, r.Err)
	}
	return res
}

// waitAllFinal waits until every job is final, all within one deadline.
func (b *bundle) waitAllFinal(t *testing.T, res []levee.PublishResult, within time.Duration) []*levee.JobStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	sts := make([]*levee.JobStatus, len(res))
	for i, r := range res {
		sts[i] = b.waitFinal(t, r.ID, max(time.Until(deadline), time.Millisecond))
	}
	return sts
}

// ownPool gives a worker its own Postgres pool, so that timing does not depend on the queries
// of the other tests sharing the package's pool.
func ownPool(t *testing.T) func(*levee.WorkerConfig) {
	return func(c *levee.WorkerConfig) { c.Pool, c.DatabaseURL = nil, leveetest.DatabaseURL(t) }
}

// dropFleetBucket deletes the namespace's fleet registry at cleanup (the streams' cleanup does
// not know of it). Register it before starting workers, so it runs after they stopped.
func dropFleetBucket(t *testing.T, b *bundle) {
	t.Cleanup(func() {
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		if err == nil {
			_ = js.DeleteKeyValue(context.Background(), strings.ToUpper(b.ns)+"_WORKERS")
		}
	})
}

// noDeadLetter asserts that job id has no dead-letter copy.
func (b *bundle) noDeadLetter(t *testing.T, id string) {
	t.Helper()
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
	require.NoError(t, err)
	_, err = q.GetDeadLetter(context.Background(), id)
	require.ErrorIs(t, err, queue.ErrNotFound, "job %s has a dead-letter copy", id)
}

// logWatch is a slog handler that passes each record to fn: tests wait on the worker's own
// signals (started, fleet changed) instead of sleeping.
type logWatch struct{ fn func(slog.Record) }

func (h logWatch) Enabled(context.Context, slog.Level) bool      { return true }
func (h logWatch) Handle(_ context.Context, r slog.Record) error { h.fn(r); return nil }
func (h logWatch) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h logWatch) WithGroup(string) slog.Handler                 { return h }

// intAttr returns the int attribute key of r, or -1.
func intAttr(r slog.Record, key string) int64 {
	v := int64(-1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key && a.Value.Kind() == slog.KindInt64 {
			v = a.Value.Int64()
			return false
		}
		return true
	})
	return v
}

func waitClosed(t *testing.T, ch <-chan struct{}, within time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(within):
		t.Fatalf("%s within %s", what, within)
	}
}

// Scenario 11 and rule 19: a burst of 300 jobs, 15× the rate, published at once to a kind
// limited to 20/s (burst 5) that three workers serve: the downstream never sees more than the
// rate plus the burst in any second, and the backlog drains at the rate, each job once.
func TestResilienceRateLimitLevelsBurstAcrossFleet(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const (
			jobs    = 300
			perSec  = 20
			burst   = 5
			workers = 3
		)
		dropFleetBucket(t, b)
		ds := newCallRecorder(t, callRecorderConfig{})
		h := httpKind(t, ds.URL+"/")
		policy := levee.Policy{Rate: levee.Rate{Events: perSec, Per: time.Second}, Burst: burst, Backoff: fastRetry}

		// Start the workers one after the other. Each counts the fleet when it joins; the
		// earlier ones take their third of the rate at their next registry refresh (every 5s,
		// a third of the registry's default 15s TTL), which they log as "fleet changed".
		// The jobs are published only once all three hold a third, so that the bound below
		// needs no tolerance for the join period.
		var sawAll []chan struct{}
		joined := time.Now()
		for i := range workers {
			started, all := make(chan struct{}), make(chan struct{})
			var startedOnce, allOnce sync.Once
			watch := logWatch{fn: func(r slog.Record) {
				switch {
				case r.Message == "worker started":
					startedOnce.Do(func() { close(started) })
				case r.Message == "fleet changed" && intAttr(r, "workers") == workers:
					allOnce.Do(func() { close(all) })
				}
			}}
			b.startWorker(t, "level", h, policy, ownPool(t), func(c *levee.WorkerConfig) {
				c.ID, c.Logger = fmt.Sprintf("%s-w%d", b.ns, i), slog.New(watch)
			})
			waitClosed(t, started, 15*time.Second, fmt.Sprintf("worker %d did not start", i))
			joined = time.Now()
			if i < workers-1 { // the last one counted all three when it joined
				sawAll = append(sawAll, all)
			}
		}
		for i, ch := range sawAll {
			waitClosed(t, ch, 15*time.Second, fmt.Sprintf("worker %d did not see the whole fleet", i))
		}
		t.Logf("fleet converged %s after the last worker joined", time.Since(joined).Round(time.Millisecond))

		published := time.Now()
		res := publishCalls(t, b, "level", ds.URL, "level-"+b.ns, jobs)
		require.Eventually(t, func() bool { return ds.Keys() == jobs }, 35*time.Second, 50*time.Millisecond,
			"the backlog did not drain")
		for _, st := range b.waitAllFinal(t, res, 10*time.Second) {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s", st.ID)
			require.Equal(t, 1, st.Attempts, "job %s", st.ID)
		}
		for _, r := range res {
			require.Equal(t, 1, ds.Calls(r.Key), "key %s called once", r.Key)
		}
		require.Equal(t, jobs, ds.Total())

		times := ds.Times()
		most := maxInWindow(times, time.Second)
		drain := times[len(times)-1].Sub(times[0])
		t.Logf("%d jobs, %d workers, rate %d/s burst %d: max %d calls in any 1s window; drain %s (first call %s after publish)",
			jobs, workers, perSec, burst, most, drain.Round(time.Millisecond), times[0].Sub(published).Round(time.Millisecond))
		// The shares add up to the rate and each worker's bucket holds burst/3 (at least 1):
		// 20 + 3 in theory. The bound allows the whole burst, which absorbs the jitter
		// between taking a token and the call reaching the downstream (claim, scheduling).
		require.LessOrEqual(t, most, perSec+burst, "the fleet exceeded its rate")
		minDrain := time.Duration(float64(jobs-burst) / perSec * 0.9 * float64(time.Second))
		require.GreaterOrEqual(t, drain, minDrain, "the backlog drained faster than the rate allows")
		// And not much slower: the three shares add up to the whole rate.
		maxDrain := time.Duration(float64(jobs) / perSec * 1.4 * float64(time.Second))
		require.LessOrEqual(t, drain, maxDrain, "the backlog drained well below the rate")
	})
}

// Scenario 9 and rule 18: a downstream outage longer than the retry budget (3 attempts, backoff
// under 1s) opens the breaker, which pauses the kind: few calls reach the downstream while it
// is down, nothing is dead-lettered, and every job succeeds once after recovery.
func TestResilienceOutagePausesKindAndAllRecover(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const (
			jobs        = 40
			maxAttempts = 3
			outage      = 10 * time.Second
		)
		var downUntil atomic.Int64 // unix nanoseconds
		ds := newCallRecorder(t, callRecorderConfig{Status: func(_ string, _ int, at time.Time) int {
			if at.UnixNano() < downUntil.Load() {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		}})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{
			MaxAttempts: maxAttempts,
			Backoff:     levee.Backoff{Base: 200 * time.Millisecond, Max: time.Second},
			Breaker: levee.BreakerPolicy{
				Window: 5 * time.Second, MinCalls: 5, FailureRate: 0.5, OpenFor: time.Second, HalfOpenCalls: 2,
			},
			Concurrency: 4,
		})

		start := time.Now()
		end := start.Add(outage)
		downUntil.Store(end.UnixNano())
		res := publishCalls(t, b, "charge", ds.URL, "outage-"+b.ns, jobs)

		sts := b.waitAllFinal(t, res, 35*time.Second)
		maxSeen := 0
		for i, st := range sts {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s (%s: %s)", st.ID, st.Reason, st.LastError)
			require.LessOrEqual(t, st.Attempts, maxAttempts, "job %s", st.ID)
			require.Equal(t, 1, ds.OKs(res[i].Key), "key %s: one effect", res[i].Key)
			maxSeen = max(maxSeen, st.Attempts)
		}
		for _, r := range res {
			b.noDeadLetter(t, r.ID)
		}
		during, keys := ds.CallsBefore(end)
		t.Logf("%d jobs × %d attempts: %d calls (to %d keys) during the %s outage, %d in all; most attempts of a job %d; all done %s after publish",
			jobs, maxAttempts, during, keys, outage, ds.Total(), maxSeen, time.Since(start).Round(time.Millisecond))
		require.Less(t, during, jobs*maxAttempts/2, "the breaker did not hold calls back during the outage")
	})
}

// Rule 18: 4xx answers are not the downstream failing. A storm of 400s never opens the breaker
// (were it open, the kind would pause for OpenFor, 30s): every job is dead at once with
// permanent_error after one call, and the kind keeps serving.
func TestResilience4xxStormDoesNotOpenBreaker(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const jobs = 30
		healthy := "healthy-" + b.ns
		ds := newCallRecorder(t, callRecorderConfig{Status: func(key string, _ int, _ time.Time) int {
			if key == healthy {
				return http.StatusOK
			}
			return http.StatusBadRequest
		}})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{
			MaxAttempts: 5, Backoff: fastRetry, Concurrency: 4,
			Breaker: levee.BreakerPolicy{Window: 10 * time.Second, MinCalls: 5, FailureRate: 0.5, OpenFor: 30 * time.Second, HalfOpenCalls: 1},
		})

		start := time.Now()
		res := publishCalls(t, b, "charge", ds.URL, "storm-"+b.ns, jobs)
		for _, st := range b.waitAllFinal(t, res, 10*time.Second) {
			require.Equal(t, levee.StateDead, st.State, "job %s", st.ID)
			require.Equal(t, "permanent_error", st.Reason, "job %s", st.ID)
			require.Equal(t, 1, st.Attempts, "job %s", st.ID)
		}
		elapsed := time.Since(start)
		for _, r := range res {
			require.Equal(t, 1, ds.Calls(r.Key), "key %s: a permanent error is never retried", r.Key)
		}
		require.Equal(t, jobs, ds.Total())

		// The kind still serves at once: a breaker opened by the storm would hold this for 30s.
		ok, err := b.client.Publish(context.Background(), "charge", callJob(ds.URL, -1), levee.WithKey(healthy))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, ok.ID, 5*time.Second).State)
		t.Logf("%d × 400: all dead in %s; a healthy job after the storm took %s", jobs,
			elapsed.Round(time.Millisecond), time.Since(start.Add(elapsed)).Round(time.Millisecond))
	})
}

// Rule 20, per kind: a kind whose downstream hangs holds only its own slots. Fast jobs of
// another kind on the same worker finish while the slow ones are still running, and the slow
// kind's backlog waits in the stream rather than in the worker.
func TestResilienceSlowKindDoesNotBlockOthers(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const slowJobs, fastJobs = 10, 50
		hang := make(chan struct{})
		slow := newCallRecorder(t, callRecorderConfig{Hang: hang})
		fast := newCallRecorder(t, callRecorderConfig{})
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		require.NoError(t, w.Handle("slow", httpKind(t, slow.URL+"/"), levee.Policy{Timeout: 20 * time.Second, Concurrency: 2}))
		require.NoError(t, w.Handle("fast", httpKind(t, fast.URL+"/"), levee.Policy{Backoff: fastRetry}))
		run(t, w)
		var releaseOnce sync.Once
		release := func() { releaseOnce.Do(func() { close(hang) }) }
		t.Cleanup(release) // before the worker stops: the hung calls answer and it drains at once

		slowRes := publishCalls(t, b, "slow", slow.URL, "slow-"+b.ns, slowJobs)
		require.Eventually(t, func() bool { return slow.InFlight() == 2 }, 15*time.Second, 10*time.Millisecond,
			"the slow kind never filled its two slots")

		start := time.Now()
		fastRes := publishCalls(t, b, "fast", fast.URL, "fast-"+b.ns, fastJobs)
		for _, st := range b.waitAllFinal(t, fastRes, 10*time.Second) {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s", st.ID)
		}
		took := time.Since(start)
		for _, r := range fastRes {
			require.Equal(t, 1, fast.Calls(r.Key), "key %s", r.Key)
		}

		states := map[levee.State]int{}
		for _, r := range slowRes {
			st, err := b.client.Status(context.Background(), r.ID)
			require.NoError(t, err)
			states[st.State]++
		}
		require.Equal(t, map[levee.State]int{levee.StateRunning: 2, levee.StateQueued: slowJobs - 2}, states,
			"two slow jobs hold the kind's slots; the rest wait in the stream")
		require.Equal(t, 2, slow.InFlight())
		require.Equal(t, 2, slow.Total(), "the slow kind made no call beyond its slots")
		t.Logf("%d fast jobs done in %s while %d slow calls hung", fastJobs, took.Round(time.Millisecond), slow.InFlight())

		release()
		for _, st := range b.waitAllFinal(t, slowRes, 20*time.Second) {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s", st.ID)
		}
	})
}

// Rule 20, per worker: a kind's attempts on one worker never exceed its Concurrency.
func TestResilienceBulkheadPerWorker(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const jobs, slots = 30, 3
		ds := newCallRecorder(t, callRecorderConfig{Hold: 150 * time.Millisecond})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Concurrency: slots, Backoff: fastRetry})

		start := time.Now()
		res := publishCalls(t, b, "charge", ds.URL, "bulk-"+b.ns, jobs)
		for _, st := range b.waitAllFinal(t, res, 20*time.Second) {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s", st.ID)
		}
		for _, r := range res {
			require.Equal(t, 1, ds.Calls(r.Key), "key %s", r.Key)
		}
		t.Logf("Concurrency %d: max %d calls in flight; %d jobs of 150ms in %s", slots, ds.MaxInFlight(), jobs,
			time.Since(start).Round(time.Millisecond))
		require.Equal(t, slots, ds.MaxInFlight(), "the bulkhead holds exactly Concurrency calls at once")
	})
}

// Rule 20, fleet-wide: three workers of Concurrency 4 have at most FleetConcurrency (5, the
// consumer's MaxAckPending) of the kind's jobs in flight together.
func TestResilienceBulkheadFleetWide(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const jobs, perWorker, fleet, workers = 40, 4, 5, 3
		dropFleetBucket(t, b)
		ds := newCallRecorder(t, callRecorderConfig{Hold: 150 * time.Millisecond})
		h := httpKind(t, ds.URL+"/")
		policy := levee.Policy{Concurrency: perWorker, FleetConcurrency: fleet, Backoff: fastRetry}
		for i := range workers {
			b.startWorker(t, "charge", h, policy, func(c *levee.WorkerConfig) { c.ID = fmt.Sprintf("%s-w%d", b.ns, i) })
		}

		start := time.Now()
		res := publishCalls(t, b, "charge", ds.URL, "fleet-"+b.ns, jobs)
		for _, st := range b.waitAllFinal(t, res, 25*time.Second) {
			require.Equal(t, levee.StateSucceeded, st.State, "job %s", st.ID)
		}
		for _, r := range res {
			require.Equal(t, 1, ds.Calls(r.Key), "key %s", r.Key)
		}
		t.Logf("%d workers × Concurrency %d, FleetConcurrency %d: max %d calls in flight; %d jobs of 150ms in %s",
			workers, perWorker, fleet, ds.MaxInFlight(), jobs, time.Since(start).Round(time.Millisecond))
		require.LessOrEqual(t, ds.MaxInFlight(), fleet, "the fleet exceeded FleetConcurrency")
		require.GreaterOrEqual(t, ds.MaxInFlight(), perWorker, "the fleet never used more than one worker's slots")
	})
}

// Rule 22: a job whose attempts are exhausted hands over to its kind's fallback with the same
// key and payload (no fake success, no DLQ copy); a fallback job that fails too is dead-lettered
// and never falls back again, even when its kind names a fallback (a cycle).
func TestResilienceFallbackKind(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		const jobs = 10
		poison := "poison-" + b.ns
		// The primary refuses with a retried 4xx: a 5xx from every call would be an outage,
		// which spends no attempts (design rule 38) and falls back only after fallback_after.
		primary := newCallRecorder(t, callRecorderConfig{Status: func(string, int, time.Time) int {
			return http.StatusTooManyRequests
		}})
		backup := newCallRecorder(t, callRecorderConfig{Status: func(key string, _ int, _ time.Time) int {
			if key == poison {
				return http.StatusServiceUnavailable
			}
			return http.StatusOK
		}})
		// The backup provider gets the same job, and calls its own host.
		backupHTTP := httpKind(t, backup.URL+"/")
		toBackup := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			j := *job
			j.Payload = []byte(strings.ReplaceAll(string(job.Payload), primary.URL, backup.URL))
			return backupHTTP.Work(ctx, &j)
		})
		noBreaker := levee.BreakerPolicy{MinCalls: 1000} // only the fallback is under test here
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		require.NoError(t, w.Handle("charge", httpKind(t, primary.URL+"/"),
			levee.Policy{MaxAttempts: 2, Backoff: fastRetry, Breaker: noBreaker, Fallback: "charge_backup"}))
		require.NoError(t, w.Handle("charge_backup", toBackup,
			levee.Policy{MaxAttempts: 2, Backoff: fastRetry, Breaker: noBreaker, Fallback: "charge"}))
		run(t, w)

		res := publishCalls(t, b, "charge", primary.URL, "fb-"+b.ns, jobs)
		bad, err := b.client.Publish(context.Background(), "charge", callJob(primary.URL, -1), levee.WithKey(poison))
		require.NoError(t, err)

		for _, r := range res {
			st := b.waitFinal(t, r.ID, 20*time.Second)
			require.Equal(t, levee.StateDead, st.State, "job %s", r.ID)
			require.Equal(t, "fell_back", st.Reason, "job %s", r.ID)
			require.Equal(t, 2, st.Attempts, "job %s", r.ID)
			require.Contains(t, st.LastError, "429")
			require.Equal(t, worker.FallbackID(r.ID), st.FallbackTo)

			fb := b.waitFinal(t, st.FallbackTo, 20*time.Second)
			require.Equal(t, levee.StateSucceeded, fb.State, "fallback job %s", fb.ID)
			require.Equal(t, "charge_backup", fb.Kind)
			require.Equal(t, r.ID, fb.FallbackOf)
			require.Equal(t, r.Key, fb.Key, "the fallback job keeps the key")
			require.Empty(t, fb.FallbackTo)
			require.Equal(t, 1, fb.Attempts)

			require.Equal(t, 2, primary.Calls(r.Key), "key %s: the primary saw its two attempts", r.Key)
			require.Equal(t, 1, backup.Calls(r.Key), "key %s: the backup was called once", r.Key)
			require.Equal(t, 1, backup.OKs(r.Key))
			b.noDeadLetter(t, r.ID)
			b.noDeadLetter(t, fb.ID)
		}

		// The poison key fails on both: the fallback job is dead-lettered, not handed back.
		st := b.waitFinal(t, bad.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "fell_back", st.Reason)
		fb := b.waitFinal(t, st.FallbackTo, 20*time.Second)
		require.Equal(t, levee.StateDead, fb.State)
		require.Equal(t, "max_attempts", fb.Reason, "a fallback job never falls back again")
		require.Equal(t, 2, fb.Attempts)
		require.Equal(t, bad.ID, fb.FallbackOf)
		require.Empty(t, fb.FallbackTo)
		require.Equal(t, "max_attempts", b.dlqEntry(t, fb.ID).Reason)
		b.noDeadLetter(t, bad.ID)
		_, err = b.client.Status(context.Background(), worker.FallbackID(fb.ID))
		require.True(t, errors.Is(err, levee.ErrJobNotFound), "no third job: %v", err)
		require.Equal(t, 2, primary.Calls(poison), "the primary was not called again")
		require.Equal(t, 2, backup.Calls(poison))
		require.Zero(t, backup.OKs(poison))
	})
}
