package levee_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// bundle is one test's fresh world: a namespace on one NATS server and the test Postgres.
type bundle struct {
	ns     string
	nats   string
	client *levee.Client
	ops    *admin.Client // the operator API on client's connections
}

func setup(t *testing.T, srv leveetest.Server) *bundle {
	t.Helper()
	ns := leveetest.Namespace(t)
	leveetest.Ledger(t, ns) // migrated schema, dropped at cleanup
	leveetest.Queue(t, srv.URL, ns)
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{
		NATSURL: srv.URL, Pool: leveetest.Pool(t), Namespace: ns,
	})
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return &bundle{ns: ns, nats: srv.URL, client: c, ops: admin.New(c)}
}

// eachServer runs fn against the system NATS server and an embedded current one.
func eachServer(t *testing.T, fn func(t *testing.T, b *bundle)) {
	for _, srv := range leveetest.Servers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, srv))
		})
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("LEVEE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (b *bundle) workerConfig(t *testing.T) levee.WorkerConfig {
	return levee.WorkerConfig{
		NATSURL: b.nats, Pool: leveetest.Pool(t), Namespace: b.ns, Logger: testLogger(t),
		ShutdownTimeout: 5 * time.Second, SkipMigrate: true,
	}
}

// run starts w and returns a stop function that cancels it and waits for Run to return.
func run(t *testing.T, w *levee.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("worker did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (b *bundle) startWorker(t *testing.T, kind string, h levee.Handler, p levee.Policy, mods ...func(*levee.WorkerConfig)) (stop func()) {
	t.Helper()
	cfg := b.workerConfig(t)
	for _, m := range mods {
		m(&cfg)
	}
	w, err := levee.NewWorker(cfg)
	require.NoError(t, err)
	require.NoError(t, w.Handle(kind, h, p))
	return run(t, w)
}

// waitFinal polls the status of id until it is final.
func (b *bundle) waitFinal(t *testing.T, id string, within time.Duration) *levee.JobStatus {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := b.client.Status(context.Background(), id)
		if err != nil && !errors.Is(err, levee.ErrJobNotFound) {
			require.NoError(t, err)
		}
		if err == nil && st.State.Final() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not final within %s; last status %+v, err %v", id, within, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// downstream is a payment-provider-like HTTP server that records every call per
// Idempotency-Key and applies each key's effect once.
type downstream struct {
	*httptest.Server
	mu      sync.Mutex
	calls   map[string]int
	effects map[string]int
	times   map[string][]time.Time
	respond func(key string, call int) (status int, header http.Header)
}

func newDownstream(t *testing.T, respond func(key string, call int) (int, http.Header)) *downstream {
	d := &downstream{calls: map[string]int{}, effects: map[string]int{}, times: map[string][]time.Time{}, respond: respond}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		d.mu.Lock()
		d.calls[key]++
		n := d.calls[key]
		d.times[key] = append(d.times[key], time.Now())
		status, hdr := http.StatusOK, http.Header(nil)
		if d.respond != nil {
			status, hdr = d.respond(key, n)
		}
		if status/100 == 2 {
			d.effects[key] = 1 // an idempotent provider applies a key's effect once
		}
		d.mu.Unlock()
		for k, vs := range hdr {
			w.Header()[k] = vs
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"charged":true}`))
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *downstream) Calls(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.calls[key]
}

func (d *downstream) Times(key string) []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]time.Time(nil), d.times[key]...)
}

// dlqEntry reads the dead-letter copy of id.
func (b *bundle) dlqEntry(t *testing.T, id string) *queue.DeadLetter {
	t.Helper()
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
	require.NoError(t, err)
	// The ledger says dead a moment before the copy is stored (commit, then copy, then term).
	var e *queue.DeadLetter
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err = q.GetDeadLetter(context.Background(), id)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err, "dead-letter copy of %s", id)
	return e
}

// metricsText reads the /metrics page a worker's Handler serves at baseURL.
func metricsText(t *testing.T, baseURL string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, baseURL+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

// kindConsumer opens kind's durable consumer, which a worker of kind created.
func (b *bundle) kindConsumer(t *testing.T, kind string) jetstream.Consumer {
	t.Helper()
	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	names, err := queue.NewNames(b.ns)
	require.NoError(t, err)
	cons, err := js.Consumer(context.Background(), names.JobsStream(), names.Consumer(kind))
	require.NoError(t, err)
	return cons
}

// strandJob spends every delivery of job id (of kind) without claiming it, as a worker that
// crashes on it would, until the server gives up on it: its max-deliveries advisory is
// handled and the message leaves the work stream. No worker of kind may be running; its
// consumer must exist (a worker of kind ran before). It keeps fetching rather than fetching
// a fixed number of times: a fetch can come back empty on a loaded machine (a nak still in
// the server's queue), and the server only emits the advisory on a fetch that finds the
// limit reached.
func (b *bundle) strandJob(t *testing.T, kind, id string, maxDeliveries int) (messages int) {
	t.Helper()
	ctx := context.Background()
	cons := b.kindConsumer(t, kind)
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
	require.NoError(t, err)
	b.waitAdvisoryCapture(t)
	delivered := map[uint64]uint64{} // stream sequence → deliveries seen
	deadline := time.Now().Add(45 * time.Second)
	for {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(500*time.Millisecond))
		require.NoError(t, err)
		for m := range batch.Messages() {
			md, err := m.Metadata()
			require.NoError(t, err)
			require.LessOrEqual(t, md.NumDelivered, uint64(maxDeliveries), "the server delivered past MaxDeliver")
			delivered[md.Sequence.Stream] = max(delivered[md.Sequence.Stream], md.NumDelivered)
			require.NoError(t, m.Nak())
		}
		if _, err := q.FindQueued(ctx, id); errors.Is(err, queue.ErrNotFound) {
			for seq, n := range delivered {
				require.EqualValues(t, maxDeliveries, n, "deliveries of %s (message %d) before it left the work stream", id, seq)
			}
			return len(delivered)
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s still in the work stream after deliveries %v (max %d)", id, delivered, maxDeliveries)
		}
	}
}

// waitAdvisoryCapture waits until a worker has set up the capture of max-deliveries
// advisories (the stream and its consumer): the server sends an advisory once, and one sent
// before the capture exists is lost (only the sweep of stranded messages finds its job then,
// much later). Workers set it up a moment after their kinds' consumers.
func (b *bundle) waitAdvisoryCapture(t *testing.T) {
	t.Helper()
	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		_, err := js.Consumer(context.Background(), strings.ToUpper(b.ns)+"_ADVISORIES", b.ns+"_max_deliveries")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "no worker captures max-deliveries advisories")
}

// spendDeliveries naks the next n deliveries of kind's consumer, as a worker that crashed
// holding them would leave them. No worker of kind may be running.
func (b *bundle) spendDeliveries(t *testing.T, kind string, n int) {
	t.Helper()
	cons := b.kindConsumer(t, kind)
	for spent := 0; spent < n; {
		batch, err := cons.Fetch(n-spent, jetstream.FetchMaxWait(2*time.Second))
		require.NoError(t, err)
		for m := range batch.Messages() {
			require.NoError(t, m.Nak())
			spent++
		}
	}
}
