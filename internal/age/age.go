// Package age reads and writes the durations people type and read: the ages of the --since
// and --older-than filters (enqueue and the dashboard), and the compact durations both show
// (850ms, 42s, 3m07s, 5h12m, 3d04h).
package age

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxAgeDays bounds the day count of an age, far below time.Duration's limit of 292 years.
const maxAgeDays = 36500

// ErrSyntax explains what Parse reads.
var ErrSyntax = errors.New("give a duration such as 90s, 15m, 1h30m or 30d")

// Parse reads an age, as the --since and --older-than filters of enqueue and the
// dashboard take it: a Go duration (90s, 15m, 1h30m), or a whole number of days, alone or
// before one (30d, 1d12h). It must be positive.
func Parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	days, rest, hasDays := strings.Cut(s, "d") // no Go duration unit has a 'd'
	if !hasDays {
		rest = s
	}
	var d time.Duration
	if hasDays {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > maxAgeDays {
			return 0, ErrSyntax
		}
		d = time.Duration(n) * 24 * time.Hour
	}
	if rest != "" || !hasDays { // a bare duration, or what follows the days
		x, err := time.ParseDuration(rest)
		if err != nil || x < 0 {
			return 0, ErrSyntax
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("%w, greater than zero", ErrSyntax)
	}
	return d, nil
}

// Format writes d compactly in its two largest units: 850ms, 42s, 3m07s, 5h12m, 3d04h. Zero and
// negative durations (clocks apart) are 0s.
func Format(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
}
