//go:build !linux

package worker

import "time"

// bootTime falls back to the monotonic clock where no boot clock is read.
func bootTime() time.Duration { return time.Since(processStart) }

var processStart = time.Now()
