// Package levee is a durable job worker: NATS JetStream carries jobs, a fleet of workers
// drains them at a pace the downstream can take, and a Postgres ledger makes each job's effect
// happen once, even when a message is delivered twice or a worker dies mid-job.
//
// Producers use a Client to publish jobs and query their status; publishing needs only NATS.
// Workers register a Handler and a Policy per kind on a Worker and Run it:
//
//	w, err := levee.NewWorker(levee.WorkerConfig{NATSURL: natsURL, DatabaseURL: dbURL})
//	w.Handle("email", levee.HandlerFunc(sendEmail), levee.Policy{MaxAttempts: 8})
//	err = w.Run(ctx) // until ctx ends, then a graceful drain
//
// A handler returns a result (stored as JSON) or an error. Errors are retried with capped
// exponential backoff and full jitter until the attempt budget is spent, then the job is
// dead-lettered; wrap an error with Permanent to dead-letter at once, or with RetryAfter to
// set the next attempt's delay. Handlers should pass Job.Key to their downstream as its
// idempotency key: it is the same for every attempt and every worker.
//
// Operators (the enqueue CLI, the dashboard, scripts) inspect and act on jobs, dead jobs,
// kinds and breakers through package admin, made from a Client with admin.New. The value types
// both packages share (job status, attempts, dead jobs, audit entries) live in package
// leveetype.
package levee
