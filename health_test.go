package levee_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
)

// readyz fetches /readyz and returns its status code and body.
func readyz(t *testing.T, base string) (int, levee.Health) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, base+"/readyz", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var h levee.Health
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	return resp.StatusCode, h
}

func waitReady(t *testing.T, base string, want levee.CheckStatus, check string, within time.Duration) levee.Health {
	t.Helper()
	var last levee.Health
	require.Eventually(t, func() bool {
		_, last = readyz(t, base)
		if check != "" {
			return last.Checks[check].Status == want && last.Status == want
		}
		return last.Status == want
	}, within, 100*time.Millisecond, "want %s (%s); last %+v", want, check, last)
	return last
}

// /readyz moves healthy → degraded (a breaker opens) → unhealthy (Postgres cut) → healthy
// (Postgres back, downstream recovered, breaker closed); /metrics counts the real jobs.
func TestReadyzTransitionsAndMetrics(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		dbURL, err := url.Parse(leveetest.DatabaseURL(t))
		require.NoError(t, err)
		proxy := leveetest.NewProxy(t, dbURL.Host)
		dbURL.Host = proxy.Addr()

		var failing atomic.Bool
		failing.Store(true)
		ds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if failing.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, `{"ok":true}`)
		}))
		t.Cleanup(ds.Close)
		h, err := builtin.NewHTTP(builtin.HTTPConfig{Allow: []string{ds.URL + "/"}})
		require.NoError(t, err)

		cfg := b.workerConfig(t)
		cfg.Pool, cfg.DatabaseURL = nil, dbURL.String()
		w, err := levee.NewWorker(cfg)
		require.NoError(t, err)
		require.NoError(t, w.Handle("charge", h, levee.Policy{
			MaxAttempts: 20, Backoff: levee.Backoff{Base: 50 * time.Millisecond, Max: 100 * time.Millisecond},
			Breaker: levee.BreakerPolicy{Window: 10 * time.Second, MinCalls: 3, FailureRate: 0.5, OpenFor: 2 * time.Second, HalfOpenCalls: 1},
		}))
		srv := httptest.NewServer(w.Handler())
		t.Cleanup(srv.Close)

		code, hl := readyz(t, srv.URL)
		require.Equal(t, http.StatusServiceUnavailable, code, "not running yet: %+v", hl)
		run(t, w)
		hl = waitReady(t, srv.URL, levee.Healthy, "", 20*time.Second)
		for _, c := range []string{"nats", "postgres", "dlq", "breaker:charge"} {
			require.Contains(t, hl.Checks, c)
		}

		ids := make([]string, 5)
		for i := range ids {
			res, err := b.client.Publish(ctx, "charge", map[string]string{"url": ds.URL + "/c"})
			require.NoError(t, err)
			ids[i] = res.ID
		}
		hl = waitReady(t, srv.URL, levee.Degraded, "breaker:charge", 20*time.Second)
		require.Contains(t, hl.Checks["breaker:charge"].Message, "open")
		code, _ = readyz(t, srv.URL)
		require.Equal(t, http.StatusOK, code, "degraded still answers 200")

		proxy.Cut()
		hl = waitReady(t, srv.URL, levee.Unhealthy, "postgres", 20*time.Second)
		code, _ = readyz(t, srv.URL)
		require.Equal(t, http.StatusServiceUnavailable, code)
		// /readyz answers whoever reaches the listener: no connection error (which names the
		// host, the user and the database) is in it, only what is wrong.
		msg := hl.Checks["postgres"].Message
		require.Contains(t, msg, "unreachable")
		for _, leak := range []string{dbURL.Host, "user=", "database=", "dial", "postgres@"} {
			require.NotContains(t, msg, leak)
		}

		failing.Store(false)
		proxy.Restore()
		waitReady(t, srv.URL, levee.Healthy, "", 40*time.Second)
		for _, id := range ids {
			require.Equal(t, levee.StateSucceeded, b.waitFinal(t, id, 40*time.Second).State)
		}

		text := metricsText(t, srv.URL)
		require.Contains(t, text, `levee_jobs_finished_total{kind="charge",outcome="succeeded"} 5`)
		require.Contains(t, text, `levee_attempts_total{kind="charge",result="retry"}`)
		require.Contains(t, text, `levee_ledger_duration_seconds_count{op="claim"}`)
		require.True(t, strings.Contains(text, "levee_job_latency_seconds_bucket"), "end-to-end latency histogram")
	})
}

// metricValue returns the value of the series line that starts with series in text.
func metricValue(t *testing.T, text, series string) (float64, bool) {
	t.Helper()
	for line := range strings.Lines(text) {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			require.NoError(t, err, line)
			return v, true
		}
	}
	return 0, false
}

// /readyz and /metrics of every worker show the fleet's breaker: its state, the failures in
// the fleet's window and the next trial, also on a worker whose own calls did not open it; a
// worker that cannot reach the shared record says that it decides alone.
func TestReadyzAndMetricsShowFleetBreaker(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[0])
	ctx := context.Background()
	failing := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		return nil, errors.New("downstream down")
	})
	policy := levee.Policy{Concurrency: 1, Backoff: levee.Backoff{Base: time.Hour, Max: time.Hour},
		Breaker: levee.BreakerPolicy{Window: 10 * time.Minute, MinCalls: 2, FailureRate: 0.5, OpenFor: time.Hour}}
	var urls []string
	for _, id := range []string{"w1", "w2"} {
		cfg := b.workerConfig(t)
		cfg.ID = id
		w, err := levee.NewWorker(cfg)
		require.NoError(t, err)
		require.NoError(t, w.Handle("charge", failing, policy))
		srv := httptest.NewServer(w.Handler())
		t.Cleanup(srv.Close)
		run(t, w)
		urls = append(urls, srv.URL)
	}
	for _, u := range urls {
		hl := waitReady(t, u, levee.Healthy, "breaker:charge", 20*time.Second)
		require.Equal(t, "fleet breaker closed: no calls in the fleet's window", hl.Checks["breaker:charge"].Message)
	}
	for range 2 {
		_, err := b.client.Publish(ctx, "charge", nil)
		require.NoError(t, err)
	}

	// Every worker shows the shared record's state and next trial.
	for _, u := range urls {
		waitReady(t, u, levee.Degraded, "breaker:charge", 20*time.Second)
	}
	q := leveetest.Queue(t, b.nats, b.ns)
	store, err := fleet.New(q).Breakers(ctx, false)
	require.NoError(t, err)
	v, _, found, err := store.Get(ctx, "charge")
	require.NoError(t, err)
	require.True(t, found)
	rec := executor.ParseShared(v)
	open := regexp.MustCompile(`^fleet breaker open until (\S+) \(next trial in 59m5\ds\): the kind is paused; ([12]) of ([12]) calls failed \(100%\) in the fleet's window$`)
	for _, u := range urls {
		code, hl := readyz(t, u)
		require.Equal(t, http.StatusOK, code, "an open breaker degrades, never fails, readiness")
		msg := hl.Checks["breaker:charge"].Message
		m := open.FindStringSubmatch(msg)
		require.NotNil(t, m, msg)
		require.Equal(t, rec.Until.UTC().Format(time.RFC3339), m[1])
		require.Equal(t, m[2], m[3])
	}
	for _, u := range urls {
		var text string
		require.Eventually(t, func() bool {
			text = metricsText(t, u)
			state, _ := metricValue(t, text, `levee_breaker_state{kind="charge"}`)
			return state == 2
		}, 20*time.Second, 200*time.Millisecond, "the sampler sees the open breaker")
		rate, ok := metricValue(t, text, `levee_breaker_failure_rate{kind="charge"}`)
		require.True(t, ok, text)
		require.Equal(t, 1.0, rate)
		calls, _ := metricValue(t, text, `levee_breaker_window_calls{kind="charge"}`)
		require.Contains(t, []float64{1, 2}, calls)
		next, _ := metricValue(t, text, `levee_breaker_next_trial_seconds{kind="charge"}`)
		require.InDelta(t, time.Until(rec.Until).Seconds(), next, 10)
		cutOff, ok := metricValue(t, text, `levee_breaker_cut_off{kind="charge"}`)
		require.True(t, ok, text)
		require.Zero(t, cutOff)
	}

	// Without the record, each worker decides alone, and says so.
	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	require.NoError(t, js.DeleteKeyValue(ctx, strings.ToUpper(b.ns)+"_BREAKERS"))
	for _, u := range urls {
		require.Eventually(t, func() bool {
			_, hl := readyz(t, u)
			c := hl.Checks["breaker:charge"]
			return c.Status == levee.Degraded && strings.HasSuffix(c.Message,
				"; this worker is cut off from the fleet's breaker record and decides alone from its own outcomes")
		}, 20*time.Second, 100*time.Millisecond, "the worker is cut off")
		require.Eventually(t, func() bool {
			v, _ := metricValue(t, metricsText(t, u), `levee_breaker_cut_off{kind="charge"}`)
			return v == 1
		}, 20*time.Second, 200*time.Millisecond, "the cut-off gauge")
	}
}
