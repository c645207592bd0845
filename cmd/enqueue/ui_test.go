package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/levee-dev/levee/dashboard"
)

func TestUIUsageErrors(t *testing.T) {
	t.Parallel()
	users := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(users, []byte("ada:admin:-\n"), 0o600))
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--addr", "0.0.0.0:8080"}, "not loopback: serving it needs authentication"},
		{[]string{"--addr", "no-port"}, "invalid --addr"},
		{[]string{"--min-poll", "100ms"}, "invalid --min-poll"},
		{[]string{"--prefix", "levee/"}, "invalid --prefix"},
		{[]string{"--trusted-proxy-header", "X-User"}, "go together"},
		{[]string{"--trusted-proxy-header", "X-User", "--trusted-proxies", "10.0.0.0/33"}, "invalid --trusted-proxies"},
		{[]string{"--users-file", users}, "the role (second field) must be viewer or operator"},
		{[]string{"--users-file", filepath.Join(t.TempDir(), "missing")}, "--users-file"},
	}
	for _, c := range cases {
		r := runCLI(t, "", append([]string{"ui", "--nats-url", unreachableNATS}, c.args...)...)
		assert.Equal(t, 2, r.code, c.args)
		assert.Contains(t, r.stderr, c.want, c.args)
		assert.Equal(t, 2, strings.Count(r.stderr, "\n"), "one line and the pointer to --help: %q", r.stderr)
	}
}

func TestUIServesAndStops(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx, stop := context.WithCancel(context.Background())
	out, w := io.Pipe()
	done := make(chan int, 1)
	go func() {
		args := []string{"ui", "--addr", "127.0.0.1:0", "--read-only", "--nats-url", b.natsURL, "--database-url", b.dbURL, "--namespace", b.ns}
		done <- run(ctx, args, strings.NewReader(""), w, io.Discard)
		_ = w.Close()
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, out) }()
	require.Contains(t, line, "dashboard on http://")
	printed := strings.Fields(strings.TrimPrefix(line, "dashboard on "))[0]
	require.Contains(t, printed, "/?token=", "without users the URL carries the run's token")
	url := strings.TrimSuffix(printed[:strings.Index(printed, "?")], "/")

	// Without the token, even a local client is refused.
	get, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/kinds", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(get)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode)

	// The printed URL sets the cookie that every later request carries.
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	client := &http.Client{Jar: jar}
	open, err := http.NewRequestWithContext(t.Context(), http.MethodGet, printed, nil)
	require.NoError(t, err)
	resp, err = client.Do(open)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "/", resp.Request.URL.RequestURI(), "the token is dropped from the URL")
	get, err = http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/kinds", nil)
	require.NoError(t, err)
	resp, err = client.Do(get)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, dashboard.ContentSecurityPolicy, resp.Header.Get("Content-Security-Policy"))
	post, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/kinds/charge/pause", nil)
	require.NoError(t, err)
	resp, err = client.Do(post)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusForbidden, resp.StatusCode, "--read-only refuses changes")

	stop()
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("enqueue ui did not stop")
	}
}

// hash-password prints a bcrypt hash of the password on standard input, which a users file
// then accepts; a users file that others can read is warned about.
func TestUIHashPasswordAndUsersFile(t *testing.T) {
	t.Parallel()
	r := runCLI(t, "s3cret\n", "ui", "hash-password")
	require.Equal(t, 0, r.code, r.stderr)
	hash := strings.TrimSpace(r.stdout)
	require.True(t, strings.HasPrefix(hash, "$2"), hash)
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret")))
	require.NotContains(t, r.stdout+r.stderr, "s3cret")

	r = runCLI(t, "", "ui", "hash-password")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "the password is empty")

	file := filepath.Join(t.TempDir(), "users")
	require.NoError(t, os.WriteFile(file, []byte("ada:operator:"+hash+"\n"), 0o644))
	r = runCLI(t, "", "ui", "--users-file", file, "--addr", "127.0.0.1:0", "--nats-url", unreachableNATS)
	require.Contains(t, r.stderr, "can be read by others (mode 0644): chmod 600 it")
	require.NoError(t, os.Chmod(file, 0o600))
	r = runCLI(t, "", "ui", "--users-file", file, "--addr", "127.0.0.1:0", "--nats-url", unreachableNATS)
	require.NotContains(t, r.stderr, "can be read by others")
	require.NotContains(t, r.stderr, "unknown", "the bcrypt line is accepted: %s", r.stderr)
}
