package idempotency

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/levee-dev/levee/migrations"
)

// migrationsTable is goose's version table, inside the namespace's schema.
const migrationsTable = "levee_migrations"

// Migrate creates schema if it does not exist and applies every pending migration in it. It
// holds a Postgres advisory lock derived from the schema name while it works, so several workers
// starting at once apply each migration exactly once. It returns the versions it applied.
func Migrate(ctx context.Context, pool *pgxpool.Pool, schema string, logger *slog.Logger) ([]int64, error) {
	if err := CheckEncoding(ctx, pool); err != nil {
		return nil, err
	}
	lockID := advisoryLockID("levee.migrate." + schema)

	// CREATE SCHEMA IF NOT EXISTS races with itself; serialise it under the same lock id.
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", lockID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{schema}.Sanitize())
		return err
	}); err != nil {
		return nil, fmt.Errorf("create schema %q: %w", schema, err)
	}

	connConfig := pool.Config().ConnConfig.Copy()
	connConfig.RuntimeParams["search_path"] = schema
	db := stdlib.OpenDB(*connConfig)
	defer func() { _ = db.Close() }()
	db.SetMaxOpenConns(2)

	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID))
	if err != nil {
		return nil, fmt.Errorf("migration lock: %w", err)
	}
	opts := []goose.ProviderOption{
		goose.WithSessionLocker(locker),
		goose.WithTableName(migrationsTable),
		goose.WithDisableGlobalRegistry(true),
	}
	if logger != nil {
		opts = append(opts, goose.WithSlog(logger))
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, opts...)
	if err != nil {
		return nil, fmt.Errorf("load migrations: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("apply migrations in schema %q: %w", schema, err)
	}
	applied := make([]int64, 0, len(results))
	for _, r := range results {
		applied = append(applied, r.Source.Version)
	}
	return applied, nil
}

// ErrEncoding is returned (wrapped) for a database whose encoding is not UTF8.
var ErrEncoding = errors.New("the ledger needs a UTF8 database")

// CheckEncoding returns an error wrapping ErrEncoding unless the database's server encoding is
// UTF8. Texts are made storable as UTF-8 (design rule 28); on a SQL_ASCII or LATIN1 database
// jsonb refuses escapes that a UTF8 one stores (SQLSTATE 0A000, 22P05), so one job's result
// could fail its neighbours' commits or its own success. Migrate calls it, and a worker that
// skips migrations calls it at start.
func CheckEncoding(ctx context.Context, pool *pgxpool.Pool) error {
	var enc, db string
	if err := pool.QueryRow(ctx, "SELECT current_setting('server_encoding'), current_database()").Scan(&enc, &db); err != nil {
		return fmt.Errorf("read the database's encoding: %w", err)
	}
	if enc != "UTF8" {
		return fmt.Errorf("%w: database %q has encoding %s; create one with ENCODING 'UTF8' (CREATE DATABASE … ENCODING 'UTF8' TEMPLATE template0) and point --database-url at it",
			ErrEncoding, db, enc)
	}
	return nil
}

// DropSchema removes a namespace's schema and everything in it. Tests use it to clean up.
func DropSchema(ctx context.Context, pool *pgxpool.Pool, schema string) error {
	_, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	return err
}

// advisoryLockID maps a name to a stable 63-bit advisory lock id.
func advisoryLockID(name string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(name))
	return int64(h.Sum64() >> 1)
}
