package levee

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
)

// ConnectError is a failure to reach NATS or Postgres (unreachable, refused credentials, a bad
// URL). Service is "nats" or "postgres", so that callers can say which setting to check.
type ConnectError struct {
	Service string
	Err     error
}

func (e *ConnectError) Error() string { return e.Err.Error() }
func (e *ConnectError) Unwrap() error { return e.Err }

// connectTimeout bounds the first connection to each service.
const connectTimeout = 5 * time.Second

// connectNATS dials url. Once connected, the connection reconnects forever.
func connectNATS(url, name string, opts []nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return nil, &ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: the server refused the credentials (%w); check the user/password, token, creds or nkey", RedactURL(url), err)}
	case err != nil:
		return nil, &ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: %w (is nats-server running there, with JetStream?)", RedactURL(url), err)}
	}
	return nc, nil
}

// openPool opens a Postgres pool on dbURL and checks that it answers.
func openPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("invalid database URL %s: %w", RedactURL(dbURL), err)}
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.ConnectTimeout = connectTimeout
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("open Postgres at %s: %w", RedactURL(dbURL), err)}
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("connect to Postgres at %s: %w (is PostgreSQL running there?)", RedactURL(dbURL), err)}
	}
	return pool, nil
}

// RedactURL returns s with any password replaced by "xxxxx", for logs and errors. Strings that
// are not URLs are returned as they are only if they hold no '@'.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		for i := range len(s) {
			if s[i] == '@' {
				return "(unparsable URL)"
			}
		}
		return s
	}
	if u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
	}
	q := u.Query()
	if q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.String()
}
