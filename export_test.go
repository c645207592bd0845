package levee

import "time"

// SetSkipAck installs the test seam that drops acks after commit, as a lost ack would.
func SetSkipAck(cfg *WorkerConfig, f func(id string) bool) { cfg.skipAck = f }

// SetSweep makes the sweep of stranded messages run every `every` and take messages stored
// longer than `after` ago.
func SetSweep(cfg *WorkerConfig, every, after time.Duration) {
	cfg.sweepEvery, cfg.sweepAfter = every, after
}
