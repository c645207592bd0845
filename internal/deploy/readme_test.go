package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Every Go block of the README is a file of examples/ as it is, so that it compiles (go vet
// and go build build them) and the README cannot drift from code that works.
func TestREADMEGoBlocksCompile(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	require.NoError(t, err)
	files, err := filepath.Glob(filepath.Join(root, "examples", "*", "*.go"))
	require.NoError(t, err)
	sources := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		sources[strings.TrimSpace(string(b))] = f
	}
	blocks := 0
	rest := string(readme)
	for {
		_, after, found := strings.Cut(rest, "```go\n")
		if !found {
			break
		}
		block, tail, ok := strings.Cut(after, "\n```")
		require.True(t, ok, "a Go block is not closed")
		rest = tail
		blocks++
		_, ok = sources[strings.TrimSpace(block)]
		require.True(t, ok, "README Go block %d is no file of examples/ as it is:\n%s", blocks, block)
	}
	require.Positive(t, blocks)
}
