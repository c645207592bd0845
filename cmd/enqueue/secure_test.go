package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
)

// enqueue reaches a NATS server that requires TLS and credentials through its flags and
// LEVEE_NATS_* variables; wrong credentials give a clear one-line error without the password.
// Not parallel: it sets LEVEE_NATS_PASSWORD.
func TestEnqueueWithTLSAndCredentials(t *testing.T) {
	srv := leveetest.StartSecureEmbedded(t)
	ns := leveetest.Namespace(t)
	base := []string{"--nats-url", srv.URL, "--namespace", ns, "--nats-tls-ca", srv.CAFile, "--nats-user", srv.User}

	r := runCLI(t, "", append([]string{"publish", "noop", "{}", "--nats-password", "wrong-pass"}, base...)...)
	require.Equal(t, 1, r.code, r.stderr)
	require.Contains(t, r.stderr, "refused the credentials")
	require.NotContains(t, r.stderr, "wrong-pass")
	require.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line: %q", r.stderr)

	r = runCLI(t, "", "publish", "noop", "{}", "--nats-url", srv.URL, "--namespace", ns)
	require.Equal(t, 1, r.code, "no CA, no credentials: %s", r.stderr)

	t.Setenv("LEVEE_NATS_PASSWORD", srv.Password)
	r = runCLI(t, "", append([]string{"publish", "noop", "{}", "--json"}, base...)...)
	require.Equal(t, 0, r.code, r.stderr)
	require.Contains(t, r.stdout, `"kind":"noop"`)
}
