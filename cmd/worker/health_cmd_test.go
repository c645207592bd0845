package main

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHealthCommand(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			_, _ = w.Write([]byte("ready\n"))
		case "/down":
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("nats: unreachable\n"))
		case "/hang":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	code, stdout, stderr := runInProcess(t, "health", "--url", srv.URL+"/readyz")
	require.Equal(t, 0, code, stderr)
	require.Equal(t, "ready\n", stdout)

	code, stdout, stderr = runInProcess(t, "health", "--url", srv.URL+"/down")
	require.Equal(t, 1, code)
	require.Equal(t, "nats: unreachable\n", stdout, "the answer is printed for the health log")
	require.Contains(t, stderr, "503 Service Unavailable")

	code, _, stderr = runInProcess(t, "health", "--url", srv.URL+"/nowhere")
	require.Equal(t, 1, code, "only 200 is healthy")
	require.Contains(t, stderr, "404")

	code, _, stderr = runInProcess(t, "health", "--url", srv.URL+"/hang", "--timeout", "100ms")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "deadline exceeded")

	code, _, stderr = runInProcess(t, "health", "--url", "http://127.0.0.1:"+strconv.Itoa(freePort(t))+"/readyz")
	require.Equal(t, 1, code)
	require.Contains(t, stderr, "connection refused")
}

func TestHealthCommandUsageErrors(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"health", "--url", "127.0.0.1:9090/readyz"},
		{"health", "--url", "ftp://127.0.0.1/readyz"},
		{"health", "--timeout", "0s"},
		{"health", "--timeout", "soon"},
		{"health", "extra"},
	} {
		code, _, stderr := runInProcess(t, args...)
		require.Equal(t, 2, code, "args %q: %s", args, stderr)
	}
}
