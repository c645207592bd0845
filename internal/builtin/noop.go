package builtin

import (
	"context"

	"github.com/levee-dev/levee/leveetype"
)

// Noop succeeds at once with no result. It is for smoke tests and benchmarks; it is a
// levee.Handler.
var Noop noop

type noop struct{}

// Work returns no result and no error.
func (noop) Work(context.Context, *leveetype.Job) (any, error) { return nil, nil }
