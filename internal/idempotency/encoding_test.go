package idempotency_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
)

// otherEncoding creates a database with server encoding enc (dropped at cleanup) and returns a
// pool on it. Many long-lived Postgres installations were initialised as LATIN1 or SQL_ASCII
// (initdb's default under the C locale).
func otherEncoding(t *testing.T, enc string) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	admin := leveetest.Pool(t)
	db := "enc_" + strings.ToLower(enc) + "_" + leveetest.Namespace(t)
	_, err := admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s ENCODING '%s' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'", db, enc))
	require.NoError(t, err)
	u, err := url.Parse(leveetest.DatabaseURL(t))
	require.NoError(t, err)
	u.Path = "/" + db
	pool, err := pgxpool.New(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() {
		pool.Close()
		_, _ = admin.Exec(context.Background(), "DROP DATABASE "+db+" WITH (FORCE)")
	})
	return pool
}

// The ledger refuses a database whose encoding is not UTF8 (found by review): there jsonb
// refuses escapes a UTF8 database stores (SQL_ASCII: any \u escape of a non-ASCII character,
// SQLSTATE 0A000; LATIN1: one outside Latin-1, 22P05), so one job's result could fail the
// group commit of its neighbours, or its own success (design rule 28).
func TestLedgerRefusesANonUTF8Database(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, enc := range []string{"SQL_ASCII", "LATIN1"} {
		t.Run(enc, func(t *testing.T) {
			t.Parallel()
			pool := otherEncoding(t, enc)
			_, err := idempotency.Migrate(ctx, pool, leveetest.Namespace(t), nil)
			require.ErrorIs(t, err, idempotency.ErrEncoding)
			require.Contains(t, err.Error(), "has encoding "+enc)
			require.ErrorIs(t, idempotency.CheckEncoding(ctx, pool), idempotency.ErrEncoding)
		})
	}
	require.NoError(t, idempotency.CheckEncoding(ctx, leveetest.Pool(t)))
}
