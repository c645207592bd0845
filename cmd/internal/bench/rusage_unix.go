//go:build unix

package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
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

// resetPeakRSS resets the process's peak RSS (Linux: "5" to /proc/self/clear_refs), so that a
// later getrusage reports the peak from now on. It says whether that worked; elsewhere it does
// nothing. The heap is returned to the OS first so the reset starts from what is live.
func resetPeakRSS() bool {
	if runtime.GOOS != "linux" {
		return false
	}
	debug.FreeOSMemory()
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// peakRSSSinceReset is the peak RSS in bytes since resetPeakRSS: VmHWM of /proc/self/status,
// which clear_refs resets (getrusage's maximum may also hold the peak of threads that exited).
func peakRSSSinceReset() int64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return readUsage().maxRSS
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return readUsage().maxRSS
}
