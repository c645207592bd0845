//go:build chaos

// This file exists only in binaries built with the chaos build tag (the fault-injection suite,
// internal/chaos, builds its worker so). Production builds do not have it, and their calls
// carry no test header (design rule 36).

package builtin

import (
	"context"
	"net/http"

	"github.com/levee-dev/levee/internal/worker"
)

// HeaderTestWorker names the worker that made a call, in the fault-injection build only: the
// chaos suite's checker uses it to tell whether a repeated call is explained by a fault of the
// worker that made the call before it (design rule 0).
const HeaderTestWorker = "Levee-Test-Worker"

func init() {
	testRequestHook = func(ctx context.Context, h http.Header) {
		h.Set(HeaderTestWorker, worker.IDFrom(ctx))
	}
}
