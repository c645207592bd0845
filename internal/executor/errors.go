package executor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/levee-dev/levee/leveetype"
)

// PermanentError marks an error that retrying cannot fix (validation, a 4xx, a bad payload).
// The job goes to the dead-letter queue after this attempt.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string {
	if e.Err == nil {
		return "permanent error"
	}
	return e.Err.Error()
}

func (e *PermanentError) Unwrap() error { return e.Err }

// Permanent wraps err as a PermanentError. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &PermanentError{Err: err}
}

// RetryAfterError asks for the next attempt no sooner than Delay (an HTTP Retry-After). The
// delay replaces the backoff's for this retry; it does not grant extra attempts.
type RetryAfterError struct {
	Delay time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("retry after %s", e.Delay)
	}
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.Delay)
}

func (e *RetryAfterError) Unwrap() error { return e.Err }

// RetryAfter wraps err as a RetryAfterError with delay d. A nil err still asks for a retry.
func RetryAfter(d time.Duration, err error) error {
	if err == nil {
		err = errors.New("retry requested")
	}
	return &RetryAfterError{Delay: d, Err: err}
}

// ErrAttemptTimeout is the cause of an attempt's context when its timeout ends it.
var ErrAttemptTimeout = errors.New("attempt timed out")

// ErrPanic wraps a handler panic; it is retryable.
var ErrPanic = errors.New("handler panicked")

// Class is what an attempt's outcome means for the job.
type Class int

const (
	// Succeeded: commit the result and ack.
	Succeeded Class = iota + 1
	// Retry: commit retrying and nak with the computed delay (or dead if attempts are spent).
	Retry
	// Dead: commit dead, copy to the DLQ, term.
	Dead
	// Abandoned: the attempt was stopped by us (shutdown, lost lease); it says nothing about
	// the job. Release or leave it; never count it against the downstream.
	Abandoned
)

// Reasons a job is dead-lettered.
const (
	ReasonPermanent      = "permanent_error"
	ReasonMaxAttempts    = "max_attempts"
	ReasonMalformed      = "malformed"
	ReasonKeyReused      = "key_reused_with_different_payload"
	ReasonNoHandler      = "no_handler"
	ReasonMaxDeliveries  = "max_deliveries"
	ReasonDisallowedURL  = "url_not_allowed"
	ReasonPayloadInvalid = "invalid_payload"
	// ReasonUnstorable: the attempt's outcome (its result or error text) could not be stored
	// in the ledger even after it was made storable; the job is dead rather than run again.
	ReasonUnstorable = "unstorable_result"
	// ReasonFellBack: not dead-lettered but handed to the kind's fallback kind.
	ReasonFellBack = "fell_back"
	// ReasonCancelled: an operator cancelled the job.
	ReasonCancelled = leveetype.ReasonCancelled
)

// DeadReasons are the reasons a dead job can have, in name order.
var DeadReasons = []string{ReasonCancelled, ReasonFellBack, ReasonPayloadInvalid, ReasonKeyReused, ReasonMalformed,
	ReasonMaxAttempts, ReasonMaxDeliveries, ReasonNoHandler, ReasonPermanent, ReasonUnstorable, ReasonDisallowedURL}

// CheckReason returns an error naming the known reasons unless reason is one of them.
func CheckReason(reason string) error {
	if slices.Contains(DeadReasons, reason) {
		return nil
	}
	return fmt.Errorf("unknown reason %q: use one of %s", reason, strings.Join(DeadReasons, ", "))
}

// Verdict is the classified outcome of one attempt.
type Verdict struct {
	Class Class
	// Err is the attempt's error (nil on success).
	Err error
	// Reason is the dead-letter code when Class is Dead.
	Reason string
	// RetryAfter is the delay the handler asked for, if any (0: use the backoff).
	RetryAfter time.Duration
	// Timeout is true when the attempt's timeout ended it.
	Timeout bool
}

// StatusError carries the status code a downstream answered with (an HTTP status), so that
// the breaker can tell an overloaded or failing downstream (5xx) from one that refused the
// request (4xx, including 408, 425 and 429, which are retried but do not open the breaker).
type StatusError struct {
	Code int
	Err  error
}

func (e *StatusError) Error() string { return e.Err.Error() }
func (e *StatusError) Unwrap() error { return e.Err }

// ReasonError carries a specific dead-letter reason code on a permanent error.
type ReasonError struct {
	Reason string
	Err    error
}

func (e *ReasonError) Error() string { return e.Err.Error() }
func (e *ReasonError) Unwrap() error { return e.Err }

// Classify turns an attempt's error into a Verdict. attemptCtx is the attempt's context, whose
// cause tells our timeout apart from a shutdown or a lost lease.
func Classify(attemptCtx context.Context, err error) Verdict {
	if err == nil {
		return Verdict{Class: Succeeded}
	}
	cause := context.Cause(attemptCtx)
	var (
		perm   *PermanentError
		after  *RetryAfterError
		reason *ReasonError
	)
	switch {
	case errors.As(err, &perm):
		r := ReasonPermanent
		if errors.As(err, &reason) {
			r = reason.Reason
		}
		return Verdict{Class: Dead, Err: err, Reason: r}
	case attemptCtx.Err() != nil && errors.Is(cause, ErrAttemptTimeout):
		return Verdict{Class: Retry, Err: fmt.Errorf("%w: %w", ErrAttemptTimeout, err), Timeout: true}
	case attemptCtx.Err() != nil:
		return Verdict{Class: Abandoned, Err: cause}
	case errors.As(err, &after):
		return Verdict{Class: Retry, Err: err, RetryAfter: after.Delay}
	}
	return Verdict{Class: Retry, Err: err}
}
