//go:build unix

package main

import (
	"runtime"
	"syscall"
)

// readUsage reads this process's CPU time and peak resident set size.
func readUsage() procUsage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return procUsage{}
	}
	rss := int64(ru.Maxrss) * 1024 //nolint:unconvert // Maxrss is an int32 on 32-bit platforms; kilobytes on Linux
	if runtime.GOOS == "darwin" {
		rss = int64(ru.Maxrss) //nolint:unconvert // bytes on macOS
	}
	return procUsage{cpu: cpuTime(ru.Utime.Nano() + ru.Stime.Nano()), maxRSS: rss}
}
