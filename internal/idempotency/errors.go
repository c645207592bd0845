package idempotency

import "errors"

// ErrNotFound is returned when the ledger has no row for a job id.
var ErrNotFound = errors.New("job not found in ledger")

// ErrLeaseLost means a fenced write matched no row: another worker claimed the key since, or the
// key is no longer running. The caller must write nothing more and must not ack.
var ErrLeaseLost = errors.New("lease lost")
