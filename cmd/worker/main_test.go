package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "levee-worker-bin-")
	if err != nil {
		panic(err)
	}
	workerBin = filepath.Join(dir, "worker")
	if out, err := exec.CommandContext(context.Background(), "go", "build", "-o", workerBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build worker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func runInProcess(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeConfig(t *testing.T, doc string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "levee.yaml")
	require.NoError(t, os.WriteFile(p, []byte(doc), 0o600))
	return p
}

func TestUsageErrorsExit2(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--bogus"},
		{"extra-arg", "--config", "x.yaml"},
		{}, // no config
		{"--config", "x.yaml", "--shutdown-timeout", "soon"},
		{"migrate", "--nope"},
	} {
		code, _, stderr := runInProcess(t, args...)
		require.Equal(t, 2, code, "args %q: %s", args, stderr)
		require.Contains(t, stderr, "--help", "usage errors point to --help")
	}
}

func TestHelpExits0(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"--help"}, {"migrate", "--help"}} {
		code, stdout, _ := runInProcess(t, args...)
		require.Equal(t, 0, code)
		require.Contains(t, stdout, "LEVEE_NATS_URL")
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	good := writeConfig(t, "kinds:\n  charge:\n    handler: http\n    max_attempts: 7\n    http: {allow: [\"https://api.example.com/\"]}\n  ping: {handler: noop}\n")
	code, stdout, stderr := runInProcess(t, "--config", good, "--check-config")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "OK, 2 kinds")
	require.Regexp(t, `(?m)^charge\n\s+handler\s+http\n`, stdout)
	require.Regexp(t, `max_attempts\s+7\n`, stdout)
	require.Regexp(t, `timeout\s+30s per attempt`, stdout)
	require.Contains(t, stdout, "https://api.example.com/")

	bad := writeConfig(t, "kinds:\n  charge:\n    handler: http\n    timeout: 10x\n")
	code, _, stderr = runInProcess(t, "--check-config", "--config", bad)
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "kinds.charge.timeout")
	require.Equal(t, 1, bytes.Count([]byte(stderr), []byte("\n")), "one line: %q", stderr)
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	db := leveetest.DatabaseURL(t)
	t.Cleanup(func() { _, _ = leveetest.Pool(t).Exec(context.Background(), "DROP SCHEMA IF EXISTS "+ns+" CASCADE") })
	code, stdout, stderr := runInProcess(t, "migrate", "--database-url", db, "--namespace", ns, "--log-level", "warn")
	require.Equal(t, 0, code, stderr)
	require.Contains(t, stdout, "applied migrations [1 2 3 4 5 6 7]")
	code, stdout, _ = runInProcess(t, "migrate", "--database-url", db, "--namespace", ns)
	require.Equal(t, 0, code)
	require.Contains(t, stdout, "up to date")
}

func TestUnreachableServicesAreClearErrors(t *testing.T) {
	t.Parallel()
	cfg := writeConfig(t, "kinds:\n  ping: {handler: noop}\n")
	code, _, stderr := runInProcess(t, "--config", cfg, "--nats-url", "nats://127.0.0.1:1", "--database-url", leveetest.DatabaseURL(t), "--http-addr", "")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "LEVEE_NATS_URL")
	code, _, stderr = runInProcess(t, "migrate", "--database-url", "postgres://levee:s3cret@127.0.0.1:1/x?sslmode=disable")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "LEVEE_DATABASE_URL")
	require.NotContains(t, stderr, "s3cret", "passwords never appear in errors")
}

// slowDownstream answers every call after delay and counts calls per Idempotency-Key.
type slowDownstream struct {
	*httptest.Server
	mu    sync.Mutex
	calls map[string]int
	total int
}

func newSlowDownstream(t *testing.T, delay time.Duration) *slowDownstream {
	d := &slowDownstream{calls: map[string]int{}}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		d.calls[r.Header.Get("Idempotency-Key")]++
		d.total++
		d.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *slowDownstream) Total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.total
}

type proc struct {
	cmd  *exec.Cmd
	out  *bytes.Buffer
	done chan error
}

func startWorkerProc(t *testing.T, args ...string) *proc {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.CommandContext(context.Background(), workerBin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	p := &proc{cmd: cmd, out: &out, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if err := <-p.done; err != nil {
			t.Logf("worker exited: %v", err)
		}
		if t.Failed() {
			t.Logf("worker output:\n%s", out.String())
		}
	})
	return p
}

// SIGTERM with jobs in flight loses none: the first worker drains (or, past its shutdown
// timeout, hands jobs back) and exits 0; a second worker finishes the rest; every job
// succeeds and every key has exactly one successful effect.
func TestSIGTERMWithJobsInFlightLosesNone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		delay           time.Duration
		shutdownTimeout string
	}{
		{"drain", 700 * time.Millisecond, "30s"},
		{"deadline", 5 * time.Second, "500ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := leveetest.Namespace(t)
			natsURL, dbURL := leveetest.NATSURL(t), leveetest.DatabaseURL(t)
			leveetest.Ledger(t, ns)
			leveetest.Queue(t, natsURL, ns)
			ds := newSlowDownstream(t, tc.delay)
			cfg := writeConfig(t, fmt.Sprintf("kinds:\n  charge:\n    handler: http\n    concurrency: 4\n    ack_wait: 5s\n    http: {allow: [%q]}\n", ds.URL+"/"))
			args := []string{"--config", cfg, "--nats-url", natsURL, "--database-url", dbURL, "--namespace", ns,
				"--shutdown-timeout", tc.shutdownTimeout, "--http-addr", "127.0.0.1:0"}

			client, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
			require.NoError(t, err)
			defer client.Close()
			const n = 12
			ids := make([]string, n)
			for i := range n {
				res, err := client.Publish(context.Background(), "charge", map[string]any{"url": ds.URL + "/charge", "body": map[string]int{"i": i}})
				require.NoError(t, err)
				ids[i] = res.ID
			}

			first := startWorkerProc(t, args...)
			require.Eventually(t, func() bool { return ds.Total() >= 4 }, 20*time.Second, 10*time.Millisecond, "jobs in flight")
			require.NoError(t, first.cmd.Process.Signal(syscall.SIGTERM))
			select {
			case err := <-first.done:
				require.NoError(t, err, "the worker exits 0 after SIGTERM:\n%s", first.out.String())
				first.done <- nil // for cleanup
			case <-time.After(40 * time.Second):
				t.Fatalf("worker did not exit after SIGTERM:\n%s", first.out.String())
			}

			startWorkerProc(t, args...)
			for _, id := range ids {
				deadline := time.Now().Add(60 * time.Second)
				for {
					st, err := client.Status(context.Background(), id)
					if err == nil && st.State.Final() {
						require.Equal(t, levee.StateSucceeded, st.State, "job %s: %+v", id, st)
						break
					}
					require.True(t, time.Now().Before(deadline), "job %s not finished: %+v %v", id, st, err)
					time.Sleep(100 * time.Millisecond)
				}
			}
			ds.mu.Lock()
			defer ds.mu.Unlock()
			require.Len(t, ds.calls, n, "every job reached the downstream")
			if tc.name == "drain" {
				for key, c := range ds.calls {
					require.Equal(t, 1, c, "key %s called once: in-flight jobs finished during the drain", key)
				}
			}
		})
	}
}

func TestWorkerVersion(t *testing.T) {
	t.Parallel()
	code, stdout, _ := runInProcess(t, "--version")
	require.Equal(t, 0, code)
	require.Regexp(t, `^worker \S+.* go1\.\d+`, stdout)
}
