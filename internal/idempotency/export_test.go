package idempotency

// NoLockRetries turns off l's retries of a statement that met a deadlock or a serialization
// failure, so that a test sees every one.
func NoLockRetries(l *Ledger) { l.lockRetries = 0 }

// Statements returns l's SQL for the statements that lock several keys.
func Statements(l *Ledger) map[string]string {
	return map[string]string{"claim": l.q.claim, "heartbeat": l.q.heartbeat, "finish": l.q.finish, "reapKeys": l.q.reapKeys}
}

// JSONAsIs is StorableJSON's fast path.
var JSONAsIs = jsonAsIs
