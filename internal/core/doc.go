// Package core owns what package levee (the app developer's Client and Worker) and package
// admin (the operator's Client) share: the connections to NATS and Postgres with their errors,
// the checked setup of a namespace's streams, and a job's status. Neither public package
// exports these for the project's own binaries; they use this package.
package core
