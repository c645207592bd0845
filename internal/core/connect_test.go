package core_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/core"
)

// No password survives RedactURL, whatever form the connection string takes.
func TestRedactURLHidesEveryPassword(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://ada:s3cret@db:5432/app":                         "postgres://ada:xxxxx@db:5432/app",
		"postgres:///app?host=/tmp&password=s3cret":                 "postgres:///app?host=%2Ftmp&password=xxxxx",
		"postgres://db/app?user=ada&Password=s3cret&sslmode=verify": "postgres://db/app?Password=xxxxx&sslmode=verify&user=ada",
		"postgres://db/app?sslpassword=s3cret":                      "postgres://db/app?sslpassword=xxxxx",
		"host=db port=5432 user=ada password=s3cret dbname=app":     "host=db port=5432 user=ada password=xxxxx dbname=app",
		"host=db password = 's3 cret' dbname=app":                   "host=db password = xxxxx dbname=app",
		"nats://a:s3cret@n1:4222,nats://b:s3cret@n2:4222":           "nats://a:xxxxx@n1:4222,nats://b:xxxxx@n2:4222",
		"postgres://ada:s3cret@h1,h2/app":                           "postgres://ada:xxxxx@h1,h2/app",
		"nats://127.0.0.1:4222":                                     "nats://127.0.0.1:4222",
		"ada:s3cret@db":                                             "(unparsable URL)",
		"nats://s3cret@127.0.0.1:4222":                              "nats://xxxxx@127.0.0.1:4222",
		"nats://ops:pa,s3cret@127.0.0.1:4222":                       "nats://ops:xxxxx@127.0.0.1:4222",
		"nats://ops:12/34s3cret@127.0.0.1:4222":                     "(unparsable URL)",
	} {
		got := core.RedactURL(in)
		require.Equal(t, want, got, in)
		require.NotContains(t, got, "s3cret", in)
	}
}

// Connection errors name the target by its parsed parts, never with the password, whatever
// the form of the URL (a key=value string leaked it before).
func TestConnectErrorsHidePasswords(t *testing.T) {
	t.Parallel()
	for _, dsn := range []string{
		"host=127.0.0.1 port=1 user=ada password=s3cret dbname=app connect_timeout=2",
		"postgres://ada:s3cret@127.0.0.1:1/app?connect_timeout=2",
		"postgres://127.0.0.1:1/app?user=ada&password=s3cret&connect_timeout=2",
		"host=127.0.0.1 port=notaport password=s3cret",
	} {
		_, err := core.OpenPool(context.Background(), dsn, 1)
		require.Error(t, err, dsn)
		require.NotContains(t, err.Error(), "s3cret", dsn)
		require.False(t, strings.Contains(err.Error(), "\n"), "one line: %q", err)
	}
	_, err := core.OpenPool(context.Background(), "host=127.0.0.1 port=1 user=ada password=s3cret dbname=app", 1)
	require.ErrorContains(t, err, "127.0.0.1:1 (user ada, database app)")
	_, err = core.ConnectNATS("nats://a:s3cret@127.0.0.1:1,nats://b:s3cret@127.0.0.1:2", "test", nil)
	require.Error(t, err)
	require.NotContains(t, err.Error(), "s3cret")
}

func TestConnectNATSErrorHidesCredentials(t *testing.T) {
	t.Parallel()
	// Only URLs whose hosts are loopback addresses: a URL that parses to a host name would send
	// a DNS query off the machine.
	for _, u := range []string{"nats://s3cret@127.0.0.1:1", "nats://ops:s3cret@127.0.0.1:1"} {
		_, err := core.ConnectNATS(u, "test", nil)
		require.Error(t, err, u)
		require.NotContains(t, err.Error(), "s3cret", u)
	}
}
