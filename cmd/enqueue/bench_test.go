package main

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// runBenchJSON runs bench with args against the test services and returns its JSON report.
func runBenchJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	natsURL, dbURL := leveetest.NATSURL(t), leveetest.DatabaseURL(t)
	args = append([]string{"bench", "--json", "--nats-url", natsURL, "--database-url", dbURL}, args...)
	r := runCLI(t, "", args...)
	require.Equal(t, 0, r.code, r.stderr)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &rep), r.stdout)
	requireCleanedUp(t, natsURL, rep["namespace"].(string))
	return rep
}

// requireCleanedUp checks that the bench's namespace left no stream and no schema behind.
func requireCleanedUp(t *testing.T, natsURL, ns string) {
	t.Helper()
	require.Regexp(t, `^bench_[0-9a-f]{8}$`, ns)
	q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, natsURL), Namespace: ns})
	require.NoError(t, err)
	_, err = q.WorkStats(context.Background(), 0)
	require.ErrorIs(t, err, queue.ErrNoStream, "the work stream of %s is deleted", ns)
	var schemas int
	require.NoError(t, leveetest.Pool(t).QueryRow(context.Background(),
		"SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1", ns).Scan(&schemas))
	require.Zero(t, schemas, "the schema %s is dropped", ns)
}

// requireLatency checks that rep's latency percentiles are present and ordered.
func requireLatency(t *testing.T, rep map[string]any) {
	t.Helper()
	lat, ok := rep["latency_ms"].(map[string]any)
	require.True(t, ok, "latency_ms is an object: %v", rep["latency_ms"])
	for _, k := range []string{"p50", "p90", "p99", "max"} {
		require.Contains(t, lat, k)
	}
	p50, p90, p99, maxMS := lat["p50"].(float64), lat["p90"].(float64), lat["p99"].(float64), lat["max"].(float64)
	require.Positive(t, p50)
	require.LessOrEqual(t, p50, p90)
	require.LessOrEqual(t, p90, p99)
	require.LessOrEqual(t, p99, maxMS)
}

func TestBenchJSON(t *testing.T) {
	t.Parallel()
	rep := runBenchJSON(t, "--jobs", "200")

	for _, k := range []string{
		"jobs", "publish_jobs_per_sec", "work_jobs_per_sec", "e2e_jobs_per_sec", "latency_ms",
		"pg_tx_per_job", "worker_cpu_seconds", "worker_peak_rss_mb",
		"cores", "go_version", "nats_server_version", "postgres_version",
	} {
		require.Contains(t, rep, k)
	}
	require.Equal(t, "burst", rep["mode"])
	require.EqualValues(t, 200, rep["jobs"])
	for _, k := range []string{"publish_jobs_per_sec", "work_jobs_per_sec", "e2e_jobs_per_sec", "e2e_publish_jobs_per_sec", "worker_peak_rss_mb"} {
		require.Positive(t, rep[k].(float64), k)
	}
	require.Positive(t, rep["pg_tx_per_job"].(float64), "the workers commit in Postgres")
	require.Positive(t, rep["cores"].(float64))
	require.NotEmpty(t, rep["nats_server_version"])
	requireLatency(t, rep)
}

func TestBenchSteadyRate(t *testing.T) {
	t.Parallel()
	rep := runBenchJSON(t, "--rate", "200/s", "--duration", "1s", "--workers", "2")

	require.Equal(t, "steady", rep["mode"])
	require.Equal(t, "200/s", rep["rate"])
	jobs := rep["jobs"].(float64)
	// The pacing allows at most rate × duration (plus one 10 ms step); a busy machine may
	// publish fewer, so only the bound is checked.
	require.Positive(t, jobs)
	require.LessOrEqual(t, jobs, 200.0+2, "at most rate × duration jobs")
	require.Positive(t, rep["publish_jobs_per_sec"].(float64))
	require.Positive(t, rep["e2e_jobs_per_sec"].(float64))
	requireLatency(t, rep)
}

func TestBenchBacklog(t *testing.T) {
	t.Parallel()
	rep := runBenchJSON(t, "--backlog", "3000", "--duration", "1s", "--concurrency", "16")

	require.Equal(t, "backlog", rep["mode"])
	require.EqualValues(t, 3000, rep["jobs"])
	worked := rep["worked"].(float64)
	require.Positive(t, worked, "some of the backlog is worked in a second")
	require.LessOrEqual(t, worked, 3000.0)
	require.Positive(t, rep["work_jobs_per_sec"].(float64))
	require.Positive(t, rep["worker_peak_rss_mb"].(float64))
	require.Positive(t, rep["pg_tx_per_job"].(float64))
}

// --no-e2e runs the publish and work phases only (make bench-scale); the bench's default
// concurrency is the worker's.
func TestBenchNoE2E(t *testing.T) {
	t.Parallel()
	rep := runBenchJSON(t, "--jobs", "500", "--no-e2e")
	require.Equal(t, "burst", rep["mode"])
	require.Positive(t, rep["work_jobs_per_sec"].(float64))
	require.Zero(t, rep["e2e_jobs_per_sec"].(float64), "no e2e phase ran")
	require.EqualValues(t, 10, rep["concurrency"], "the worker's default concurrency")
}

func TestBenchUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad rate", []string{"--rate", "fast"}, "invalid --rate"},
		{"no rate", []string{"--rate", "none"}, "invalid --rate"},
		{"zero jobs", []string{"--jobs", "0"}, "invalid --jobs 0"},
		{"zero workers", []string{"--workers", "0"}, "invalid --workers 0"},
		{"zero concurrency", []string{"--concurrency", "0"}, "invalid --concurrency 0"},
		{"payload too small", []string{"--payload-bytes", "1"}, "invalid --payload-bytes 1"},
		{"bad kind", []string{"--kind", "No.Such"}, "invalid kind"},
		{"duration without rate", []string{"--duration", "5s"}, "--duration goes with --rate or --backlog"},
		{"jobs with rate", []string{"--rate", "10/s", "--jobs", "5"}, "not both"},
		{"zero duration", []string{"--rate", "10/s", "--duration", "0s"}, "invalid --duration"},
		{"negative backlog", []string{"--backlog", "-5"}, "invalid --backlog -5"},
		{"backlog with jobs", []string{"--backlog", "100", "--jobs", "5"}, "give --backlog alone"},
		{"backlog with rate", []string{"--backlog", "100", "--rate", "10/s"}, "give --backlog alone"},
		{"argument", []string{"extra"}, "unknown command"},
		{"no-e2e with rate", []string{"--no-e2e", "--rate", "10/s"}, "--no-e2e goes with the phases"},
		{"no-e2e with backlog", []string{"--no-e2e", "--backlog", "100"}, "--no-e2e goes with the phases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// Usage errors come before any connection: nothing listens at this URL.
			r := runCLI(t, "", append([]string{"bench", "--nats-url", unreachableNATS}, tt.args...)...)
			require.Equal(t, 2, r.code, r.stderr)
			require.Contains(t, r.stderr, tt.want)
		})
	}
}
