package levee_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/builtin"
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
