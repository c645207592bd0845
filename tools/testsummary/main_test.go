package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSummary(t *testing.T) {
	t.Parallel()
	in := strings.Join([]string{
		`{"Action":"run","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"=== RUN   TestA\n"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"    a_test.go:9: no Chromium found\n"}`,
		`{"Action":"output","Package":"p","Test":"TestA","Output":"--- SKIP: TestA (0.00s)\n"}`,
		`{"Action":"skip","Package":"p","Test":"TestA"}`,
		`{"Action":"output","Package":"p","Test":"TestB","Output":"chatter of a passing test\n"}`,
		`{"Action":"pass","Package":"p","Test":"TestB"}`,
		`{"Action":"output","Package":"p","Output":"ok  \tp\t0.1s\n"}`,
		`{"Action":"pass","Package":"p"}`,
	}, "\n")
	var out strings.Builder
	require.Equal(t, 0, run(strings.NewReader(in), &out))
	require.Equal(t, "ok  \tp\t0.1s\n\nskipped tests (1):\n  p TestA: a_test.go:9: no Chromium found\n", out.String())

	fail := `{"Action":"output","Package":"q","Test":"TestC","Output":"boom\n"}` + "\n" + `{"Action":"fail","Package":"q","Test":"TestC"}` +
		"\n" + `{"Action":"fail","Package":"q"}`
	out.Reset()
	require.Equal(t, 1, run(strings.NewReader(fail), &out))
	require.Equal(t, "boom\n", out.String())

	// A panic in a goroutine fails the package, not the test: its output is shown all the same.
	panicked := strings.Join([]string{
		`{"Action":"run","Package":"r","Test":"TestD"}`,
		`{"Action":"output","Package":"r","Test":"TestD","Output":"panic: assignment to entry in nil map\n"}`,
		`{"Action":"output","Package":"r","Output":"FAIL\tr\t0.01s\n"}`,
		`{"Action":"fail","Package":"r"}`,
	}, "\n")
	out.Reset()
	require.Equal(t, 1, run(strings.NewReader(panicked), &out))
	require.Contains(t, out.String(), "panic: assignment to entry in nil map")

	// go test that stops before running any package (a toolchain it cannot get) fails too.
	out.Reset()
	require.Equal(t, 1, run(strings.NewReader("go: go.mod requires go >= 1.99\n"), &out))
	require.Contains(t, out.String(), "go.mod requires")
}
