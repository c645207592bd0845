// Package idempotency is Levee's Postgres ledger: it makes each job's effect happen once even
// though JetStream delivers at least once.
//
// Every job has an idempotency key, scoped by kind. A worker claims a key before running the
// job; the claim returns a fence, a number that grows with every new owner. Every later write for
// that attempt (heartbeat, success, retry, dead) carries "AND fence = $fence", so a worker that
// lost its lease (paused, partitioned, too slow) writes nothing. Leases run on the database clock.
//
// The API works in batches from the start: Claim takes the keys of all jobs pulled together and
// claims them in one statement; Finish commits many outcomes in one statement. Callers that work
// one job at a time pass slices of one.
//
// Nothing a worker hands the ledger can fail the other rows of a batch (design rule 28): every
// text is made storable at this boundary (StorableText, StorableJSON), and a claim the ledger
// cannot store is answered Invalid without being sent. Every statement that locks several
// keys locks them in (kind, key) order, and the batch statements are tried again after a
// deadlock or a serialization failure (design rule 31). A commit tried again after its answer
// was lost is recognised as applied (design rule 30).
//
// Foreign errors are translated here: a missing row is ErrNotFound, a lost lease is
// ErrLeaseLost, and Transient and Unstorable tell what a Postgres or pgx error means for the
// caller: try the same call again, or split the batch around data Postgres refuses.
package idempotency
