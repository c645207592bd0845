package cli

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseAge(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"90s", 90 * time.Second},
		{"1h", time.Hour},
		{"1h30m", 90 * time.Minute},
		{"30d", 30 * 24 * time.Hour},
		{"2d", 48 * time.Hour},
		{"1d12h", 36 * time.Hour},
		{" 7d ", 7 * 24 * time.Hour},
	} {
		got, err := ParseAge(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{"", "abc", "d", "3x", "1.5d", "-1h", "0s", "0d", "1d-1h", "1dd", "99999999d", "30 days", "1w"} {
		_, err := ParseAge(bad)
		require.ErrorIs(t, err, ErrAgeSyntax, "%q", bad)
	}
}
