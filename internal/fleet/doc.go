// Package fleet owns the control plane of a namespace, beside the JetStream data plane of
// package queue: the registry of live workers (KV bucket <NS>_WORKERS: who serves which kind,
// with each worker's status of it), the operator commands (<NS>_CONTROL: pauses and breaker
// resets) and the circuit breakers the fleet shares (<NS>_BREAKERS, with outcome reports on
// <ns>.breaker.<kind>). Every name comes from queue.Names.
package fleet
