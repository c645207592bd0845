//go:build !unix

package bench

// readUsage reports nothing where getrusage is missing: the bench then shows zero CPU and RSS.
func readUsage() procUsage { return procUsage{} }

// resetPeakRSS cannot reset the peak here: the report then says the publisher is included.
func resetPeakRSS() bool { return false }

func peakRSSSinceReset() int64 { return readUsage().maxRSS }
