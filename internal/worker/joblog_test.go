package worker

import (
	"bytes"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"
)

// A job's logger writes what Logger.With would: the same attributes, in the same order,
// before the record's own; levels below the handler's are not written.
func TestJobLoggerWritesAsWith(t *testing.T) {
	t.Parallel()
	var want, got bytes.Buffer
	opts := &slog.HandlerOptions{Level: slog.LevelInfo, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	base := func(b *bytes.Buffer) *slog.Logger {
		return slog.New(slog.NewJSONHandler(b, opts)).With("kind", "charge")
	}
	base(&want).With("job_id", "j1", "key", "k1", "attempt", 2).WithGroup("g").Warn("lease lost", "err", "boom")
	jobLogger(base(&got), slog.String("job_id", "j1"), slog.String("key", "k1"), slog.Int("attempt", 2)).
		WithGroup("g").Warn("lease lost", "err", "boom")
	require.Equal(t, want.String(), got.String())

	want.Reset()
	got.Reset()
	base(&want).With("job_id", "j1").Info("done", "n", 1)
	l := jobLogger(base(&got), slog.String("job_id", "j1"))
	l.Debug("not written")
	l.Info("done", "n", 1)
	require.Equal(t, want.String(), got.String())
	require.Contains(t, got.String(), `"kind":"charge","job_id":"j1","n":1`)
}
