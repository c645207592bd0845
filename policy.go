package levee

import "github.com/levee-dev/levee/leveetype"

// Policy is a kind's resilience policy; every zero field takes its default. Handle and HandleTx
// check it with leveetype.Policy.Validate, as the worker's YAML config does.
type Policy = leveetype.Policy

// BreakerPolicy configures a kind's circuit breaker (see leveetype.BreakerPolicy).
type BreakerPolicy = leveetype.BreakerPolicy

// Backoff configures capped exponential backoff with full jitter.
type Backoff = leveetype.Backoff

// Rate is a number of events per period; see ParseRate.
type Rate = leveetype.Rate

// ParseRate reads a rate such as "50/s", "3000/m" or "10/h".
func ParseRate(s string) (Rate, error) { return leveetype.ParseRate(s) }
