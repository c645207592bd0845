// Package chaos is Levee's fault-injection suite: tests that run real worker processes (the
// built worker binary), their own NATS server processes (natsd, built from the nats-server/v2
// library) and the real Postgres through a TCP proxy the test controls, against a downstream
// that honours idempotency keys like a payment provider and records every call. They kill -9
// workers, stop them past their lease, restart or kill NATS servers and cut Postgres, and at
// the end of every scenario a checker classifies each published job (succeeded, dead, or LOST)
// and each job's downstream effects (one, none, or DUPLICATED), prints a table and fails on any
// lost job or duplicated effect.
//
// The package has no code outside its tests and natsd. By default each scenario runs a small,
// bounded count (part of make test); LEVEE_CHAOS=full runs the counts of docs/reliability.md
// (make chaos).
package chaos
