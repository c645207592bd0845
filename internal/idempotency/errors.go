package idempotency

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned when the ledger has no row for a job id.
var ErrNotFound = errors.New("job not found in ledger")

// ErrLeaseLost means a fenced write matched no row: another worker claimed the key since, or the
// key is no longer running. The caller must write nothing more and must not ack.
var ErrLeaseLost = errors.New("lease lost")

// Transient reports whether err, returned by a ledger call, is worth trying the same call
// again: the statement did not fail because of what it asked or carried, but because
// Postgres could not answer it then. That is a connection that could not be made or was lost
// (SQLSTATE class 08, or a network error), a timeout (a context deadline, statement_timeout's
// 57014, lock_timeout's 55P03), an administrator's or a failover's shutdown (57P01 to 57P03,
// and 57P05 idle_session_timeout), insufficient resources (class 53: too many connections,
// out of memory, disk full), and a serialization failure (40001) or a deadlock (40P01), which
// Claim, Heartbeat and Finish already retry a few times themselves (design rule 31). A
// cancelled context (the caller gave up) is not transient, nor is Unstorable data. After a
// lost connection a commit may have landed: Finish recognises an outcome it already applied
// (design rule 30), so retrying it is safe.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		// Whatever the server answered while connecting (a password refused during a
		// rotation, a database not there during a failover), the statement never ran.
		return true
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		switch code := pgErr.Code; {
		case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"):
			return true
		}
		switch pgErr.Code {
		case "40001", "40P01", "57P01", "57P02", "57P03", "57P05", "57014", "55P03":
			return true
		}
		return false
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	if _, ok := errors.AsType[net.Error](err); ok {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}

// Unstorable reports whether Postgres refused a ledger statement because of the data it
// carried: SQLSTATE class 22 (data_exception: 22021 a byte sequence that is not UTF-8, 22P05
// an untranslatable character such as jsonb's \u0000, 22P02 invalid text for a type such as
// jsonb, 22003 a number out of range) or a program limit (54000, such as an index row too
// large; 54001, such as a jsonb nested too deeply). Trying the same statement again fails the
// same way. The ledger makes what it stores storable first (design rule 28), so this is rare;
// a batch refused so must be split until the refused row is alone, and that row stored as a
// substitute (dead, reason unstorable_result) so that its neighbours commit.
func Unstorable(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	if !ok {
		return false
	}
	return strings.HasPrefix(pgErr.Code, "22") || pgErr.Code == "54000" || pgErr.Code == "54001" ||
		pgErr.Code == "0A000" // a conversion the database's encoding cannot make
}
