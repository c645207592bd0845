//go:build unix

package chaos

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// kindName is the kind every scenario runs: the built-in http handler charging the downstream.
const kindName = "charge"

// rigConfig shapes one scenario's system.
type rigConfig struct {
	// natsServers is 1 (default) or 3 (a cluster, streams with 3 replicas).
	natsServers int
	// ackWait is the kind's ack_wait and lease. Default 2s.
	ackWait time.Duration
	// maxAttempts and maxDeliveries of the kind. Defaults 5 and 20.
	maxAttempts, maxDeliveries int
	// concurrency per worker. Default 10.
	concurrency int
	// minDelay and maxDelay bound how long a charge takes at the downstream. Default 5-30ms.
	minDelay, maxDelay time.Duration
	// backoffBase and backoffMax are the kind's backoff. Defaults 100ms and 1s.
	backoffBase, backoffMax time.Duration
	// rate ("20/s") and burst are the kind's fleet-wide rate limit; "" and 0 leave them out
	// of the YAML (no limit; a rate's default burst).
	rate  string
	burst int
	// breaker, if set, is the kind's breaker section; nil leaves it out (the defaults).
	breaker *rigBreaker
	// periodicEvery, if set, adds a periodic job "tick" of the kind every that long, with
	// catch_up all, calling the downstream.
	periodicEvery time.Duration
}

// rigBreaker is a kind's breaker section in the YAML; each zero field is left out (its
// default applies).
type rigBreaker struct {
	window, openFor         time.Duration
	minCalls, halfOpenCalls int
	failureRate             float64
	scope                   string // "fleet" or "worker"
}

// yaml renders b as a flow mapping, for the kind's breaker key.
func (b rigBreaker) yaml() string {
	var fields []string
	add := func(key string, set bool, v any) {
		if set {
			fields = append(fields, fmt.Sprintf("%s: %v", key, v))
		}
	}
	add("window", b.window > 0, b.window)
	add("min_calls", b.minCalls > 0, b.minCalls)
	add("failure_rate", b.failureRate > 0, b.failureRate)
	add("open_for", b.openFor > 0, b.openFor)
	add("half_open_calls", b.halfOpenCalls > 0, b.halfOpenCalls)
	add("scope", b.scope != "", b.scope)
	return "{" + strings.Join(fields, ", ") + "}"
}

// rig is one scenario's system: its NATS server(s), the Postgres proxy, the downstream, a
// client to publish and inspect, and the worker processes.
type rig struct {
	t       *testing.T
	name    string
	dir     string
	ns      string
	cfg     rigConfig
	nats    *natsCluster
	pgAddr  string // Postgres, host:port; each worker reaches it through a proxy of its own
	dbURL   string // Postgres, direct
	pool    *pgxpool.Pool
	down    *downstream
	client  *levee.Client
	ops     *admin.Client // the operator API on client
	config  string
	workers []*proc
	start   time.Time
	// republished counts jobs a publisher sent again after an error; published counts jobs
	// stored.
	republished, published atomic.Int64

	faultsMu sync.Mutex
	faultLog []fault
}

// Kinds of fault the rig records.
const (
	faultKill     = "kill -9"      // a worker killed by the rig
	faultDied     = "died"         // a worker that exited without the rig killing it (a crash hook)
	faultStop     = "SIGSTOP"      // a worker stopped, until SIGCONT
	faultPGCut    = "Postgres cut" // a worker's Postgres connections closed and refused
	faultNATSKill = "NATS kill -9" // a NATS server killed
	// faultDown is a downstream outage (downstream.outage): it explains no call by rule 0 (b),
	// since the workers stay up; each call it refused failed (a).
	faultDown = "downstream down"
)

// allWorkers is the target of a fault that hits every worker at once.
const allWorkers = "all workers"

// fault is one fault of a scenario: what, on which worker (its id, or allWorkers) or NATS
// server, and when. A stop or a cut is a window from At to Until (zero while it lasts).
type fault struct {
	Kind, Target string
	At, Until    time.Time
	Detail       string
}

func (f fault) String() string {
	return fmt.Sprintf("%s %s at %s", f.Kind, f.Target, f.At.Format("15:04:05.000"))
}

// recordFault logs f and returns its index, to close a window with endFault.
func (r *rig) recordFault(f fault) int {
	r.faultsMu.Lock()
	defer r.faultsMu.Unlock()
	r.faultLog = append(r.faultLog, f)
	return len(r.faultLog) - 1
}

// endFault closes the window of fault i at until.
func (r *rig) endFault(i int, until time.Time) {
	r.faultsMu.Lock()
	defer r.faultsMu.Unlock()
	r.faultLog[i].Until = until
}

// warnings sums up the workers' warnings and errors: one line per message, with its count and
// its first job and error (each cut to 160 characters), most frequent first.
func (r *rig) warnings() []string {
	type seen struct {
		n     int
		first string
	}
	by := map[string]*seen{}
	for _, w := range r.workers {
		for _, l := range w.logLines(0) {
			var rec struct {
				Level, Msg, Err string
				JobID           string `json:"job_id"`
			}
			if json.Unmarshal([]byte(l), &rec) != nil || (rec.Level != "WARN" && rec.Level != "ERROR") {
				continue
			}
			s := by[rec.Msg]
			if s == nil {
				s = &seen{first: fmt.Sprintf("%s job %.40q: %.160s", w.id, rec.JobID, rec.Err)}
				by[rec.Msg] = s
			}
			s.n++
		}
	}
	msgs := slices.Collect(maps.Keys(by))
	slices.SortFunc(msgs, func(a, b string) int { return cmp.Or(by[b].n-by[a].n, strings.Compare(a, b)) })
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = fmt.Sprintf("%d× %q, first: %s", by[m].n, m, by[m].first)
	}
	return out
}

// linesAbout returns the workers' log lines that mention s (each cut to 600 characters and
// prefixed with its worker's id), and the rig's records of process starts and exits, in the
// order of their workers.
func (r *rig) linesAbout(s string) []string {
	var out []string
	for _, w := range r.workers {
		for _, l := range w.logLines(0) {
			if strings.Contains(l, s) || strings.HasPrefix(l, "=== chaos: ") {
				out = append(out, fmt.Sprintf("%s: %.600s", w.id, l))
			}
		}
	}
	return out
}

// faults returns the faults recorded so far.
func (r *rig) faults() []fault {
	r.faultsMu.Lock()
	defer r.faultsMu.Unlock()
	return slices.Clone(r.faultLog)
}

func newRig(t *testing.T, name string, cfg rigConfig) *rig {
	t.Helper()
	cfg.natsServers = max(cfg.natsServers, 1)
	if cfg.ackWait == 0 {
		cfg.ackWait = 2 * time.Second
	}
	if cfg.maxAttempts == 0 {
		cfg.maxAttempts = 5
	}
	if cfg.maxDeliveries == 0 {
		cfg.maxDeliveries = 20
	}
	if cfg.concurrency == 0 {
		cfg.concurrency = 10
	}
	if cfg.maxDelay == 0 {
		cfg.minDelay, cfg.maxDelay = 5*time.Millisecond, 30*time.Millisecond
	}
	if cfg.backoffBase == 0 {
		cfg.backoffBase, cfg.backoffMax = 100*time.Millisecond, time.Second
	}
	directURL := leveetest.DatabaseURL(t)
	r := &rig{t: t, name: name, dir: t.TempDir(), ns: leveetest.Namespace(t), cfg: cfg, pool: leveetest.Pool(t)}
	binaries(t)
	r.nats = startNATS(t, r.dir, cfg.natsServers)
	r.pgAddr, r.dbURL = pgTarget(t, directURL), directURL
	r.down = newDownstream(t, cfg.minDelay, cfg.maxDelay)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = idempotency.DropSchema(ctx, r.pool, r.ns)
	})

	r.config = filepath.Join(r.dir, "levee.yaml")
	yaml := fmt.Sprintf(`kinds:
  %s:
    handler: http
    max_attempts: %d
    max_deliveries: %d
    timeout: 5s
    ack_wait: %s
    backoff: {base: %s, max: %s}
    concurrency: %d
    http:
      allow: [%q]
`, kindName, cfg.maxAttempts, cfg.maxDeliveries, cfg.ackWait, cfg.backoffBase, cfg.backoffMax, cfg.concurrency, r.down.srv.URL+"/")
	if cfg.rate != "" {
		yaml += fmt.Sprintf("    rate: %q\n", cfg.rate)
	}
	if cfg.burst > 0 {
		yaml += fmt.Sprintf("    burst: %d\n", cfg.burst)
	}
	if cfg.breaker != nil {
		yaml += "    breaker: " + cfg.breaker.yaml() + "\n"
	}
	if cfg.periodicEvery > 0 {
		yaml += fmt.Sprintf("periodic:\n  - name: tick\n    kind: %s\n    every: %s\n    catch_up: all\n    payload: {\"url\": %q, \"body\": {\"periodic\": true}}\n",
			kindName, cfg.periodicEvery, r.down.url())
	}
	require.NoError(t, os.WriteFile(r.config, []byte(yaml), 0o644))
	r.start = time.Now()
	return r
}

// connectClient opens the client that publishes and inspects; in a cluster, call it only once
// the workers have created the streams (a client creates missing streams with one replica).
func (r *rig) connectClient() {
	t := r.t
	t.Helper()
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{
		NATSURL: r.nats.url(), DatabaseURL: leveetest.DatabaseURL(t), Namespace: r.ns,
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	r.client = c
	r.ops = admin.New(c)
}

// startWorker starts one supervised worker process (restarted 300ms after it dies) with the
// extra environment env. It reaches Postgres through a proxy of its own, so that a scenario can
// cut one worker's Postgres (cutPostgres) while the others, and NATS, stay up. Its exits that
// the rig did not cause (a crash hook's kill -9 inside the worker) are recorded as faults.
func (r *rig) startWorker(env ...string) *proc {
	t := r.t
	t.Helper()
	worker, _ := binaries(t)
	id := fmt.Sprintf("w%d", len(r.workers)+1)
	pg := leveetest.NewProxy(t, r.pgAddr)
	p := &proc{
		name: "worker " + id, id: id, pg: pg, path: worker, env: env, restart: 300 * time.Millisecond,
		logPath: filepath.Join(r.dir, id+".log"),
		args: []string{"--config", r.config, "--namespace", r.ns, "--nats-url", r.nats.url(),
			"--database-url", proxiedURL(t, r.dbURL, pg.Addr()), "--http-addr", "", "--id", id, "--log-level", "debug",
			"--shutdown-timeout", "2s", "--stream-replicas", fmt.Sprint(min(len(r.nats.servers), 3))},
	}
	p.onExit = func(at time.Time, err error, killed bool) {
		if !killed {
			r.recordFault(fault{Kind: faultDied, Target: id, At: at, Detail: fmt.Sprint(err)})
		}
	}
	startProc(t, p)
	r.workers = append(r.workers, p)
	return p
}

// kill kills worker w with SIGKILL (it comes back after its restart delay) and records the
// fault; it reports whether w was running.
func (r *rig) kill(w *proc) bool {
	killed, at := w.kill9()
	if killed {
		r.recordFault(fault{Kind: faultKill, Target: w.id, At: at})
	}
	return killed
}

// stop freezes worker w (SIGSTOP) until the returned function sends SIGCONT; both ends of the
// window are recorded.
func (r *rig) stop(w *proc) (cont func()) {
	t := r.t
	t.Helper()
	at := time.Now()
	require.True(t, w.signal(syscall.SIGSTOP), "SIGSTOP %s", w.name)
	i := r.recordFault(fault{Kind: faultStop, Target: w.id, At: at})
	return func() {
		require.True(t, w.signal(syscall.SIGCONT), "SIGCONT %s", w.name)
		r.endFault(i, time.Now())
	}
}

// cutPostgres closes the Postgres connections of the given workers (every worker when none is
// given) and refuses new ones until the returned function restores them; the window is
// recorded once per cut, for the worker or for allWorkers.
func (r *rig) cutPostgres(ws ...*proc) (restore func()) {
	target := allWorkers
	if len(ws) == 0 {
		ws = r.workers
	} else {
		ids := make([]string, len(ws))
		for i, w := range ws {
			ids[i] = w.id
		}
		target = strings.Join(ids, ",")
	}
	at := time.Now()
	for _, w := range ws {
		w.pg.Cut()
	}
	i := r.recordFault(fault{Kind: faultPGCut, Target: target, At: at})
	return func() {
		for _, w := range ws {
			w.pg.Restore()
		}
		r.endFault(i, time.Now())
	}
}

// killNATS kills NATS server s with SIGKILL and records the fault.
func (r *rig) killNATS(s *natsServer) {
	_, at := s.kill9()
	r.recordFault(fault{Kind: faultNATSKill, Target: s.name, At: at})
}

// waitStarted waits until every worker has logged that it started (it serves its kinds).
func (r *rig) waitStarted() {
	t := r.t
	t.Helper()
	for _, w := range r.workers {
		r.waitLog(w, 0, "worker started", 1)
	}
}

// waitLog waits until p's log, from offset, has n lines containing s.
func (r *rig) waitLog(p *proc, offset int64, s string, n int) {
	t := r.t
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := 0
		for _, l := range p.logLines(offset) {
			if strings.Contains(l, s) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d lines with %q after 60s, want %d\n%s", p.name, got, s, n, p.logTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// jobs returns n charge jobs with ids prefix-00000 and on; each charges the order named by its
// id, under the key that is its id.
func (r *rig) jobs(prefix string, n int) []levee.JobSpec {
	specs := make([]levee.JobSpec, n)
	for i := range specs {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		specs[i] = levee.JobSpec{Kind: kindName, ID: id, Payload: map[string]any{
			"url": r.down.url(), "body": map[string]string{"order": id},
		}}
	}
	return specs
}

// publish publishes specs, publishing again with the same ids whatever was refused or
// unanswered (a server down, a timeout), until all are stored or ctx ends.
func (r *rig) publish(ctx context.Context, specs []levee.JobSpec) error {
	pending := specs
	for len(pending) > 0 {
		res, err := r.client.PublishBatch(ctx, pending, nil)
		// A batch that failed as a whole is sent again in full: what was stored meanwhile is
		// deduplicated by its id (Nats-Msg-Id), as any publisher retry is.
		again := pending
		if err == nil {
			again = nil
			for i, pr := range res {
				if pr.Err != nil {
					again = append(again, pending[i])
				}
			}
		}
		r.published.Add(int64(len(pending) - len(again)))
		if len(again) > 0 {
			r.republished.Add(int64(len(again)))
			select {
			case <-ctx.Done():
				return fmt.Errorf("publish: %d of %d jobs still unpublished: %w", len(again), len(specs), ctx.Err())
			case <-time.After(250 * time.Millisecond):
			}
		}
		pending = again
	}
	return nil
}

// waitCharged waits until the downstream has made n charges.
func (r *rig) waitCharged(ctx context.Context, n int64) {
	t := r.t
	t.Helper()
	for r.down.charged.Load() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("downstream made %d charges, waited for %d: %v", r.down.charged.Load(), n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// grepLogs counts the lines of every worker's log that contain s.
func (r *rig) grepLogs(s string) int {
	n := 0
	for _, w := range r.workers {
		for _, l := range w.logLines(0) {
			if strings.Contains(l, s) {
				n++
			}
		}
	}
	return n
}

// publishPaced publishes specs in batches of 10, one batch every `every` (so that publishing
// spans the faults), retrying as publish does; the result arrives on the returned channel.
func (r *rig) publishPaced(ctx context.Context, specs []levee.JobSpec, every time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		for i := 0; i < len(specs); i += 10 {
			if err := r.publish(ctx, specs[i:min(i+10, len(specs))]); err != nil {
				done <- err
				return
			}
			time.Sleep(every)
		}
		done <- nil
	}()
	return done
}

// waitPublished waits until n jobs are stored.
func (r *rig) waitPublished(ctx context.Context, n int64) {
	t := r.t
	t.Helper()
	for r.published.Load() < n {
		select {
		case <-ctx.Done():
			t.Fatalf("%d jobs published, waited for %d: %v", r.published.Load(), n, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dumpLogs shows the tail of every process log when the test failed, or always with
// LEVEE_CHAOS_LOGS=N (N lines of each).
func (r *rig) dumpLogs() {
	n, _ := strconv.Atoi(os.Getenv("LEVEE_CHAOS_LOGS"))
	if !r.t.Failed() && n == 0 {
		return
	}
	for _, p := range r.workers {
		r.t.Logf("--- %s (%s), last lines:\n%s", p.name, p.logPath, p.logTail(max(n, 15)))
	}
	for _, s := range r.nats.servers {
		r.t.Logf("--- %s, last lines:\n%s", s.name, s.logTail(10))
	}
}
