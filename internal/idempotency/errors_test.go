package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

func TestTransientAndUnstorable(t *testing.T) {
	t.Parallel()
	pg := func(code string) error { return fmt.Errorf("finish 3 outcomes: %w", &pgconn.PgError{Code: code}) }
	for _, tc := range []struct {
		name                  string
		err                   error
		transient, unstorable bool
	}{
		{"nil", nil, false, false},
		{"plain", errors.New("boom"), false, false},
		{"connection failure", pg("08006"), true, false},
		{"cannot connect", pg("08001"), true, false},
		{"too many connections", pg("53300"), true, false},
		{"out of memory", pg("53200"), true, false},
		{"disk full", pg("53100"), true, false},
		{"serialization failure", pg("40001"), true, false},
		{"deadlock", pg("40P01"), true, false},
		{"admin shutdown", pg("57P01"), true, false},
		{"crash shutdown", pg("57P02"), true, false},
		{"cannot connect now", pg("57P03"), true, false},
		{"statement timeout", pg("57014"), true, false},
		{"lock timeout", pg("55P03"), true, false},
		{"invalid byte sequence", pg("22021"), false, true},
		{"untranslatable character", pg("22P05"), false, true},
		{"invalid text representation", pg("22P02"), false, true},
		{"numeric out of range", pg("22003"), false, true},
		{"index row too large", pg("54000"), false, true},
		{"nested too deeply", pg("54001"), false, true},
		{"unique violation", pg("23505"), false, false},
		{"undefined table", pg("42P01"), false, false},
		{"syntax error", pg("42601"), false, false},
		{"internal error", pg("XX000"), false, false},
		{"deadline", fmt.Errorf("claim: %w", context.DeadlineExceeded), true, false},
		{"cancelled", fmt.Errorf("claim: %w", context.Canceled), false, false},
		{"connection lost", fmt.Errorf("finish: %w", io.ErrUnexpectedEOF), true, false},
		{"network", fmt.Errorf("heartbeat: %w", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}), true, false},
	} {
		require.Equal(t, tc.transient, idempotency.Transient(tc.err), "Transient: %s", tc.name)
		require.Equal(t, tc.unstorable, idempotency.Unstorable(tc.err), "Unstorable: %s", tc.name)
	}
}

// Errors as Postgres and pgx really return them.
func TestTransientAndUnstorableFromPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := leveetest.Pool(t)

	unstorable := func(name, sql string, args ...any) {
		t.Helper()
		_, err := pool.Exec(ctx, sql, args...)
		require.Error(t, err, name)
		require.True(t, idempotency.Unstorable(err), "%s: %v", name, err)
		require.False(t, idempotency.Transient(err), "%s: %v", name, err)
	}
	unstorable("not UTF-8", `SELECT $1::text`, "a\xffb")
	unstorable("NUL in jsonb", `SELECT $1::text::jsonb`, `{"a":"\u0000"}`)
	unstorable("lone surrogate in jsonb", `SELECT $1::text::jsonb`, `"\ud800"`)
	unstorable("not JSON", `SELECT $1::text::jsonb`, `{`)
	unstorable("jsonb nested too deeply", `SELECT (repeat('[', 200000) || repeat(']', 200000))::jsonb`)
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE big (k text PRIMARY KEY) ON COMMIT DROP`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO big SELECT string_agg(md5(g::text), '') FROM generate_series(1, 300) g`)
		return err
	})
	require.True(t, idempotency.Unstorable(err), "index row too large: %v", err)

	// A statement that ran out of time, on the server's clock and on the caller's.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL statement_timeout = '20ms'`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_sleep(1)`)
		return err
	})
	require.True(t, idempotency.Transient(err), "statement timeout: %v", err)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = pool.Exec(short, `SELECT pg_sleep(1)`)
	require.True(t, idempotency.Transient(err), "deadline: %v", err)

	// The session killed under the statement (a failover, an administrator).
	conn, err := pgx.Connect(ctx, leveetest.DatabaseURL(t))
	require.NoError(t, err)
	defer func() { _ = conn.Close(ctx) }()
	_, err = conn.Exec(ctx, `SELECT pg_terminate_backend(pg_backend_pid())`)
	require.True(t, idempotency.Transient(err), "terminated: %v", err)
	require.False(t, idempotency.Unstorable(err))

	// No server to connect to.
	cfg, err := pgx.ParseConfig(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	cfg.Port, cfg.ConnectTimeout = 1, 2*time.Second
	_, err = pgx.ConnectConfig(ctx, cfg)
	require.Error(t, err)
	require.True(t, idempotency.Transient(err), "cannot connect: %v", err)

	// A refused statement is not transient, nor a cancelled call.
	_, err = pool.Exec(ctx, `SELECT * FROM no_such_table`)
	require.False(t, idempotency.Transient(err))
	require.False(t, idempotency.Unstorable(err))
	cancelled, cancel2 := context.WithCancel(ctx)
	cancel2()
	_, err = pool.Exec(cancelled, `SELECT 1`)
	require.Error(t, err)
	require.False(t, idempotency.Transient(err), "cancelled: %v", err)
	require.False(t, strings.Contains(err.Error(), "SQLSTATE"))
}
