// Package builtin holds the job kinds the worker binary ships with: "http", which calls an
// allowlisted URL with the job's idempotency key, and "noop", which succeeds at once.
package builtin
