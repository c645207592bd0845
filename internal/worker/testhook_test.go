//go:build chaos

package worker

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseTestCrash(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want crashHook
	}{
		{"", crashHook{}},
		{"after-call:crash", crashHook{point: crashAfterCall, match: "crash"}},
		{"before-claim:poison-1", crashHook{point: crashBeforeClaim, match: "poison-1"}},
		{"in-call:crasher", crashHook{point: crashInCall, match: "crasher"}},
		{"after-call:", crashHook{}},     // no key text: crashes nothing
		{"after-call", crashHook{}},      // no key text
		{"during-commit:x", crashHook{}}, // unknown point
		{"AFTER-CALL:x", crashHook{}},    // points are lower case
	} {
		require.Equal(t, tc.want, parseTestCrash(tc.in), "LEVEE_TEST_CRASH=%q", tc.in)
	}
	// The zero hook never fires (it would kill the test process).
	crashHook{}.at(crashAfterCall, "crash", 1)
	crashHook{point: crashAfterCall, match: "crash"}.at(crashAfterCall, "crash", 2) // only attempt 1
	crashHook{point: crashAfterCall, match: "crash"}.at(crashBeforeClaim, "crash", 0)
	crashHook{point: crashBeforeClaim, match: "poison"}.at(crashBeforeClaim, "healthy", 0)
	crashHook{point: crashInCall, match: "crasher"}.at(crashBeforeClaim, "crasher", 0) // in-call fires only after a call

	hs := parseTestCrashes("before-claim:poison, in-call:crasher,bogus")
	require.Equal(t, crashHooks{{point: crashBeforeClaim, match: "poison"}}, hs[:1])
	require.Len(t, hs, 1, "a hook with a space before its point is not one (points are exact)")
	hs = parseTestCrashes("before-claim:poison,in-call:crasher")
	require.Equal(t, crashHooks{{point: crashBeforeClaim, match: "poison"}, {point: crashInCall, match: "crasher"}}, hs)
	require.Empty(t, parseTestCrashes(""))
}
