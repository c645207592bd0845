package core

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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

// ConnectNATS dials url. Once connected, the connection reconnects forever.
func ConnectNATS(url, name string, opts []nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{
		nats.Name(name),
		nats.Timeout(connectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		err = scrubbed{err: err, secrets: userinfoSecrets(url)} // nats.go quotes the URLs it cannot parse
	}
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return nil, &ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: the server refused the credentials (%w); check the user/password, token, creds or nkey", RedactURL(url), err)}
	case err != nil:
		return nil, &ConnectError{Service: "nats", Err: fmt.Errorf("connect to NATS at %s: %w (is nats-server running there, with JetStream?)", RedactURL(url), err)}
	}
	return nc, nil
}

// OpenPool opens a Postgres pool on dbURL and checks that it answers. Its errors name the
// target by what the URL parses to (host, port, user, database), never by the URL itself.
func OpenPool(ctx context.Context, dbURL string, maxConns int32) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("invalid database URL %s: %w", RedactURL(dbURL), err)}
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	cfg.ConnConfig.ConnectTimeout = connectTimeout
	target := describePostgres(cfg.ConnConfig.Config)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("open Postgres at %s: %w", target, oneLine{err})}
	}
	pctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, &ConnectError{Service: "postgres", Err: fmt.Errorf("connect to Postgres at %s: %w (is PostgreSQL running there?)", target, oneLine{err})}
	}
	return pool, nil
}

// scrubbed is err with every secret of the URL's user info written xxxxx.
type scrubbed struct {
	err     error
	secrets []string
}

func (e scrubbed) Error() string {
	msg := e.err.Error()
	for _, sec := range e.secrets {
		msg = strings.ReplaceAll(msg, sec, "xxxxx")
	}
	return msg
}
func (e scrubbed) Unwrap() error { return e.err }

// userinfoSecrets returns the passwords and tokens in the user info of the URLs of s, and the
// pieces a comma cuts them into, as a library that splits server lists may quote them.
func userinfoSecrets(s string) []string {
	var out []string
	for rest := s; ; {
		_, after, ok := strings.Cut(rest, "://")
		if !ok {
			return out
		}
		at := strings.Index(after, "@")
		if at < 0 {
			return out
		}
		info := after[:at]
		secret := info
		if _, pw, ok := strings.Cut(info, ":"); ok {
			secret = pw
		}
		for _, piece := range append([]string{secret}, strings.Split(secret, ",")...) {
			if len(piece) >= 3 {
				out = append(out, piece)
			}
		}
		rest = after[at+1:]
	}
}

// oneLine is err on one line: pgconn lists each address it tried on a line of its own.
type oneLine struct{ err error }

func (e oneLine) Error() string {
	return strings.Join(strings.FieldsFunc(e.err.Error(), func(r rune) bool { return r == '\n' || r == '\r' || r == '\t' }), "; ")
}
func (e oneLine) Unwrap() error { return e.err }

// describePostgres names a Postgres target by its parsed parts: host:port, user, database.
func describePostgres(c pgconn.Config) string {
	host := c.Host
	if !strings.HasPrefix(host, "/") { // not a Unix socket directory
		host = net.JoinHostPort(host, strconv.Itoa(int(c.Port)))
	}
	return fmt.Sprintf("%s (user %s, database %s)", host, c.User, c.Database)
}

// RedactURL returns s with every password replaced by "xxxxx", for logs and errors: in a URL's
// user info or query (password, sslpassword), in each URL of a comma-separated server list,
// and in a key=value connection string (password=...). A string that is none of these and
// holds an '@' is not shown at all.
func RedactURL(s string) string {
	if parts := splitServerList(s); len(parts) > 1 { // a server list, or several hosts
		for i, p := range parts {
			parts[i] = RedactURL(p)
		}
		return strings.Join(parts, ",")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		if kvPassword.MatchString(s) {
			return kvPassword.ReplaceAllString(s, "${1}xxxxx")
		}
		if strings.Contains(s, "@") {
			return "(unparsable URL)"
		}
		return s
	}
	if at := strings.LastIndex(s, "@"); at >= 0 && u.User == nil || at >= 0 && !strings.HasPrefix(s[at+1:], u.Host) {
		return "(unparsable URL)" // the parse did not see the user info the text has (a '/' in a password, say)
	}
	if u.User != nil {
		_, has := u.User.Password()
		switch {
		case has:
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		case u.Scheme == "nats" || u.Scheme == "tls" || u.Scheme == "ws" || u.Scheme == "wss":
			u.User = url.User("xxxxx") // NATS reads a lone user name as a token
		}
	}
	q := u.Query()
	redacted := false
	for k := range q {
		if strings.EqualFold(k, "password") || strings.EqualFold(k, "sslpassword") {
			q.Set(k, "xxxxx")
			redacted = true
		}
	}
	if redacted {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// splitServerList splits s at the commas that start another URL (",nats://..."), or, for one
// URL with several hosts (postgres://u:p@h1,h2/db), after its user info only: a comma in a
// password splits nothing.
func splitServerList(s string) []string {
	if !strings.Contains(s, "://") {
		return []string{s}
	}
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == ',' && strings.Contains(strings.SplitN(s[i+1:], ",", 2)[0], "://") {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	parts = append(parts, s[start:])
	if len(parts) > 1 {
		return parts
	}
	// One URL: hosts after the user info, split so that each is shown as it is.
	scheme, rest, _ := strings.Cut(s, "://")
	userinfo, hosts, hasUser := strings.Cut(rest, "@")
	if !hasUser || !strings.Contains(hosts, ",") {
		return []string{s}
	}
	first, more, _ := strings.Cut(hosts, ",")
	return []string{scheme + "://" + userinfo + "@" + first, more}
}

// kvPassword matches the password of a key=value connection string (libpq's form), quoted or
// not: password=secret, password = 'sec ret'.
var kvPassword = regexp.MustCompile(`(?i)((?:^|\s)(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S*)`)
