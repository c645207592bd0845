//go:build !chaos

package worker

// Crash points of the fault-injection hooks; see testhook.go, built only with -tags chaos.
const (
	crashAfterCall   = "after-call"
	crashBeforeClaim = "before-claim"
	// crashAfterDispatch is after a due job's publish, before its row is deleted.
	crashAfterDispatch = "after-dispatch"
)

// crashAt does nothing: crash hooks exist only in binaries built with -tags chaos.
func crashAt(string, string, int) {}
