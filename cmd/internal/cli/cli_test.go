package cli_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/cmd/internal/cli"
)

// Off a terminal, every log line is JSON, and durations read as people write them.
func TestLoggerWritesJSONWithReadableDurations(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	logger, err := cli.NewLogger(&b, "info")
	require.NoError(t, err)
	logger.Info("kind served", "kind", "charge", "timeout", 30*time.Second, "ack_wait", 1500*time.Millisecond)
	logger.Warn("second line")
	for line := range strings.Lines(b.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "not JSON: %q", line)
	}
	require.Contains(t, b.String(), `"timeout":"30s"`)
	require.Contains(t, b.String(), `"ack_wait":"1.5s"`)
}

func TestCount(t *testing.T) {
	t.Parallel()
	require.Equal(t, "1 job", cli.Count(1, "job"))
	require.Equal(t, "0 jobs", cli.Count(0, "job"))
	require.Equal(t, "2 dead jobs", cli.Count(2, "dead job"))
}
