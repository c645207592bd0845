// Package bench is the engine of `enqueue bench`: it measures publish, work and end-to-end
// throughput, latency, Postgres transactions per job, CPU and peak RSS of in-process workers
// against given NATS and Postgres services, in a namespace of its own that it removes at the
// end. The command owns the flags and their checks; this package owns the run and its report.
package bench
