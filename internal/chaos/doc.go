// Package chaos is Levee's fault-injection suite: tests that run real worker processes (the
// worker binary, built with -tags chaos so that its crash hooks and its Levee-Test-Worker
// header exist), their own NATS server processes (natsd, built from the nats-server/v2
// library) and the real Postgres through one TCP proxy per worker that the test controls,
// against a downstream that honours idempotency keys like a payment provider and records every
// call (key, job, attempt, fence, worker, times, status). They kill -9 workers, stop them past
// their lease, restart or kill NATS servers, cut Postgres for every worker or for one, take the
// downstream down for a while (every call answered 503), and send poison results and hostile
// raw messages; the rig records every fault with its time and target.
//
// At the end of every scenario a checker classifies each published job (succeeded, dead, or
// LOST) and each job's downstream effects (one, none, or DUPLICATED), and judges every
// repeated call by design rule 0 (judgeCalls: the attempt before it failed, or its worker was
// out for the lease); it prints a table and fails on any lost job, duplicated effect, or
// unexplained call.
//
// The package has no code outside its tests and natsd. By default each scenario runs a small,
// bounded count (part of make test); LEVEE_CHAOS=full runs the counts of docs/reliability.md
// (make chaos).
package chaos
