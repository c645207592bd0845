// Package executor owns the resilience policies applied to every attempt and the order in which
// they nest. One Pipeline per kind composes them; see NewPipeline for the drawing.
//
// Retries are durable and happen at one layer only, outside this package: a retryable outcome
// becomes a NakWithDelay computed by Backoff, never a loop here. This package decides, for each
// attempt, whether it may start (admission), how long it may run (timeout), and what its error
// means (Classify): succeed, retry after a delay, or dead with a reason.
package executor
