package idempotency

import (
	"errors"

	"github.com/jackc/pgx/v5/pgconn"
)

// Unstorable reports whether err is Postgres refusing a statement for its data (SQLSTATE
// class 22, or a program limit such as an index row too large). Interim version: the full
// classification lands with the ledger's hardening.
func Unstorable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return len(pe.Code) == 5 && (pe.Code[:2] == "22" || pe.Code == "54000" || pe.Code == "54001")
}
