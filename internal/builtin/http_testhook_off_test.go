//go:build !chaos

package builtin_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/builtin"
)

// A production build (without -tags chaos) sends no test header: only the fault-injection
// build names the worker that made a call (design rule 36).
func TestHTTPProductionBuildSendsNoTestHeader(t *testing.T) {
	t.Parallel()
	srv := newServer(t, status(200))
	h := newHTTP(t, builtin.HTTPConfig{Allow: []string{srv.URL + "/"}})
	_, err := h.Work(t.Context(), job("order-42", payload(t, map[string]any{"url": srv.URL + "/x"})))
	require.NoError(t, err)
	calls := srv.Calls()
	require.Len(t, calls, 1)
	require.NotContains(t, calls[0].Header, "Levee-Test-Worker")
}
