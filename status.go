package levee

import "github.com/levee-dev/levee/leveetype"

// State is a job's state as Status reports it.
type State = leveetype.State

// The states of a job. Succeeded and Dead are final.
const (
	StateScheduled = leveetype.StateScheduled // waiting in the ledger until RunAt (delayed, periodic, or published in a transaction)
	StateQueued    = leveetype.StateQueued    // waiting in the stream, not yet picked up
	StateRunning   = leveetype.StateRunning   // an attempt holds the job's lease
	StateRetrying  = leveetype.StateRetrying  // failed, next attempt at NextAttemptAt
	StateSucceeded = leveetype.StateSucceeded // done; Result holds the handler's result
	StateDead      = leveetype.StateDead      // dead-lettered; Reason says why
	StateUnknown   = leveetype.StateUnknown   // neither in the stream nor in the ledger
)

// JobStatus is what Levee knows of one job (see leveetype.JobStatus).
type JobStatus = leveetype.JobStatus
