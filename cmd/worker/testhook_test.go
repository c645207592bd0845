package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/leveetest"
)

// The worker binary that TestMain builds is a production build (no -tags chaos): it has no
// crash hooks, so LEVEE_TEST_CRASH changes nothing (design rule 36). Jobs whose keys match every
// hook succeed, each called once, and the process lives on.
func TestProductionWorkerIgnoresTestCrash(t *testing.T) {
	t.Parallel()
	ns := leveetest.Namespace(t)
	natsURL, dbURL := leveetest.NATSURL(t), leveetest.DatabaseURL(t)
	leveetest.Ledger(t, ns)
	leveetest.Queue(t, natsURL, ns)
	ds := newSlowDownstream(t, 0)
	cfg := writeConfig(t, fmt.Sprintf("kinds:\n  charge:\n    handler: http\n    ack_wait: 5s\n    http: {allow: [%q]}\n", ds.URL+"/"))

	client, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: natsURL, DatabaseURL: dbURL, Namespace: ns})
	require.NoError(t, err)
	defer client.Close()
	keys := []string{"order-x-1", "order-x-2", "x"}
	ids := make([]string, len(keys))
	for i, key := range keys {
		res, err := client.Publish(context.Background(), "charge", map[string]any{"url": ds.URL + "/charge", "body": map[string]int{"i": i}},
			levee.WithKey(key))
		require.NoError(t, err)
		ids[i] = res.ID
	}

	var out bytes.Buffer
	cmd := exec.CommandContext(context.Background(), workerBin, "--config", cfg, "--nats-url", natsURL, "--database-url", dbURL,
		"--namespace", ns, "--http-addr", "", "--shutdown-timeout", "2s")
	// Every hook a chaos build knows, each matching every key above.
	cmd.Env = append(os.Environ(), "LEVEE_TEST_CRASH=before-claim:x,after-call:x,in-call:x")
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if err := <-done; t.Failed() {
			t.Logf("worker exited: %v", err)
			t.Logf("worker output:\n%s", out.String())
		}
	})

	for _, id := range ids {
		deadline := time.Now().Add(30 * time.Second)
		for {
			select {
			case err := <-done:
				done <- err // for the cleanup
				t.Fatalf("the production worker exited (%v) with LEVEE_TEST_CRASH set: crash hooks must not exist without -tags chaos", err)
			default:
			}
			st, err := client.Status(context.Background(), id)
			if err == nil && st.State.Final() {
				require.Equal(t, levee.StateSucceeded, st.State, "job %s: %+v", id, st)
				break
			}
			require.True(t, time.Now().Before(deadline), "job %s not finished: %+v %v", id, st, err)
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Still alive after every hook point passed for every job (a kill would have ended it).
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		done <- err
		t.Fatalf("the production worker exited (%v) with LEVEE_TEST_CRASH set", err)
	default:
	}
	require.NoError(t, cmd.Process.Signal(syscall.Signal(0)), "the worker process is alive")
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for _, key := range keys {
		require.Equal(t, 1, ds.calls[key], "key %s is called once", key)
	}
}
