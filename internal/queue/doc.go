// Package queue owns everything JetStream: subject and stream names, the job envelope (body and
// headers), stream and consumer setup, the publisher, the puller with its ack verbs, and the
// dead-letter stream.
//
// Names carry the namespace (default "levee"):
//
//	stream LEVEE_JOBS   subjects levee.jobs.<kind>.<job-id>   WorkQueue, file storage, Discard=New
//	stream LEVEE_DLQ    subjects levee.dlq.<kind>.<job-id>    Limits, file storage, Discard=New
//	consumer levee_<kind> on LEVEE_JOBS, filter levee.jobs.<kind>.*, AckExplicit
//	consumers levee__strays_noid (levee.jobs.*) and levee__strays_extra (levee.jobs.*.*.>)
//	stream LEVEE_ADVISORIES  the work stream's max-deliveries advisories   WorkQueue, file storage
//
// Existing streams and consumers are checked against what Levee relies on before they are
// used (CheckSetup, setup.go; design rule 34).
//
// A job's body is its JSON payload; everything else travels in headers (see Envelope), and every
// header is optional, so a plain `nats pub levee.jobs.noop.<id> '{}'` is a valid job.
//
// JetStream API errors are translated here: a missing message is ErrNotFound, a full stream is
// ErrStreamFull, a stream that does not exist is ErrNoStream.
package queue
