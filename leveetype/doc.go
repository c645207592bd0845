// Package leveetype holds the value types that app code, the operator API (package admin) and
// Levee's internals share: a job as a handler sees it, a job's state and status, its attempts,
// a dead job, an audit entry, and a kind's policy. It imports nothing from the rest of Levee,
// so every package can use these types directly, without copies or converters (design rule 39).
// Package levee re-exports the ones an app developer needs under the same names.
package leveetype
