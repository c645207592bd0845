// Package migrations holds Levee's Postgres schema as numbered SQL files, embedded so that the
// worker binary can apply them (see internal/idempotency.Migrate).
//
// The files use unqualified table names: they are applied with search_path set to the
// namespace's schema, so one database can hold several namespaces side by side.
package migrations

import "embed"

// FS holds the migration files, in goose's SQL format.
//
//go:embed *.sql
var FS embed.FS
