package levee

// SetSkipAck installs the test seam that drops acks after commit, as a lost ack would.
func SetSkipAck(cfg *WorkerConfig, f func(id string) bool) { cfg.skipAck = f }
