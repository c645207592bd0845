package cli

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// maxAgeDays bounds the day count of an age, far below time.Duration's limit of 292 years.
const maxAgeDays = 36500

// ErrAgeSyntax explains what ParseAge reads.
var ErrAgeSyntax = errors.New("give a duration such as 90s, 15m, 1h30m or 30d")

// ParseAge reads an age, as the --since and --older-than filters of enqueue and the
// dashboard take it: a Go duration (90s, 15m, 1h30m), or a whole number of days, alone or
// before one (30d, 1d12h). It must be positive.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	days, rest, hasDays := strings.Cut(s, "d") // no Go duration unit has a 'd'
	if !hasDays {
		rest = s
	}
	var d time.Duration
	if hasDays {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil || n > maxAgeDays {
			return 0, ErrAgeSyntax
		}
		d = time.Duration(n) * 24 * time.Hour
	}
	if rest != "" || !hasDays { // a bare duration, or what follows the days
		x, err := time.ParseDuration(rest)
		if err != nil || x < 0 {
			return 0, ErrAgeSyntax
		}
		d += x
	}
	if d <= 0 {
		return 0, fmt.Errorf("%w, greater than zero", ErrAgeSyntax)
	}
	return d, nil
}
