package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// liveCounts counts the keys that are running or retrying, by kind and state. The keys table
// has no index on state, so this reads the whole table (finished keys included, until the
// reaper removes them): fine for an operator's occasional look, not for a hot path. A partial
// index on (kind, state) WHERE state IN ('running', 'retrying') would make it cheap.
const liveCounts = `SELECT kind, state, count(*) FROM S.keys WHERE state IN ('running', 'retrying') GROUP BY 1, 2`

// LiveCount is how many keys of one kind are running and retrying.
type LiveCount struct {
	Running  int64
	Retrying int64
}

// LiveCounts returns the running and retrying keys of each kind that has any, in one grouped
// query over the keys table (see liveCounts for its cost). Before the schema is migrated it
// returns an empty map.
func (l *Ledger) LiveCounts(ctx context.Context) (map[string]LiveCount, error) {
	sql := strings.ReplaceAll(liveCounts, "S.", pgx.Identifier{l.schema}.Sanitize()+".")
	rows, err := l.pool.Query(ctx, sql)
	if err != nil {
		if isUndefinedTable(err) {
			return map[string]LiveCount{}, nil
		}
		return nil, fmt.Errorf("count live keys: %w", err)
	}
	counts := map[string]LiveCount{}
	var (
		kind, state string
		n           int64
	)
	_, err = pgx.ForEachRow(rows, []any{&kind, &state, &n}, func() error {
		c := counts[kind]
		switch State(state) {
		case StateRunning:
			c.Running = n
		case StateRetrying:
			c.Retrying = n
		}
		counts[kind] = c
		return nil
	})
	if err != nil {
		if isUndefinedTable(err) {
			return map[string]LiveCount{}, nil
		}
		return nil, fmt.Errorf("count live keys: %w", err)
	}
	return counts, nil
}

// ErrNotMigrated is returned (wrapped) by CheckMigrated when the ledger's tables do not exist.
var ErrNotMigrated = errors.New("the ledger's tables do not exist: no worker has migrated this namespace")

// CheckMigrated returns an error wrapping ErrNotMigrated when the ledger's schema has not been
// migrated, for operator commands that write to the ledger but never migrate it.
func (l *Ledger) CheckMigrated(ctx context.Context) error {
	err := l.Ping(ctx)
	if isUndefinedTable(err) {
		return fmt.Errorf("schema %q: %w", l.schema, ErrNotMigrated)
	}
	return err
}
