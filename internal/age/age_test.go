package age

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
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
		got, err := Parse(tt.in)
		require.NoError(t, err, tt.in)
		require.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{"", "abc", "d", "3x", "1.5d", "-1h", "0s", "0d", "1d-1h", "1dd", "99999999d", "30 days", "1w"} {
		_, err := Parse(bad)
		require.ErrorIs(t, err, ErrSyntax, "%q", bad)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0s"}, {0, "0s"}, {850 * time.Millisecond, "850ms"}, {42 * time.Second, "42s"},
		{3*time.Minute + 7*time.Second, "3m07s"}, {5*time.Hour + 12*time.Minute + 59*time.Second, "5h12m"},
		{23*time.Hour + 59*time.Minute, "23h59m"}, {76 * time.Hour, "3d04h"},
	} {
		require.Equal(t, tt.want, Format(tt.in), "%v", tt.in)
	}
}
