package builtin

import (
	"context"

	"github.com/levee-dev/levee"
)

// Noop succeeds at once with no result. It is for smoke tests and benchmarks.
var Noop levee.Handler = levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) { return nil, nil })
