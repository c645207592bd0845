//go:build chaos

package builtin_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/builtin"
)

// The fault-injection build names the worker that made each call (worker.IDFrom: empty here,
// outside a worker's attempt; the chaos suite checks the names end to end).
func TestHTTPChaosBuildSendsTestWorker(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	_, err := h.Work(t.Context(), job("order-42", payload(t, map[string]any{"url": srv.URL + "/x"})))
	require.NoError(t, err)
	calls := srv.Calls()
	require.Len(t, calls, 1)
	require.Contains(t, calls[0].Header, builtin.HeaderTestWorker)
	require.Empty(t, calls[0].Header.Get(builtin.HeaderTestWorker))
}
