package worker

import (
	"context"

	"github.com/levee-dev/levee/internal/queue"
)

// checkSetup checks the existing streams and the consumers of this worker's kinds against
// what Levee relies on (design rule 34): it logs each harmless difference as a warning and
// refuses to start, with one line per problem, when one breaks a guarantee. Run calls it
// before it creates or updates anything.
func (w *Worker) checkSetup(ctx context.Context) error {
	kinds := make([]queue.ConsumerConfig, len(w.kinds))
	for i, k := range w.kinds {
		kinds[i] = ConsumerConfig(k.kind)
	}
	problems, err := w.cfg.Queue.CheckSetup(ctx, kinds)
	if err != nil {
		return err
	}
	for _, p := range problems {
		if !p.Fatal {
			w.log.Warn(p.Message, "stream", p.Stream, "consumer", p.Consumer, "setting", p.Setting)
		}
	}
	return queue.FatalSetup(problems)
}

// ConsumerConfig is the durable consumer a worker gives kind k (zero fields take their
// defaults). Its AckWait is the lease Postgres keeps (design rule 29: ack_wait plus a heartbeat
// interval plus the takeover margin) plus the margin again, so that JetStream redelivers a
// dead worker's message once another worker may take its key over, not before: AckWait starts
// when the message is delivered or kept in progress, a little before the statement that
// starts the lease in Postgres, and a claim too early would find the key busy and spend a
// delivery.
func ConsumerConfig(k Kind) queue.ConsumerConfig {
	p := k.Policy.WithDefaults()
	lt := newLeaseTimes(p.AckWait)
	return queue.ConsumerConfig{
		Kind:          k.Name,
		AckWait:       lt.stored() + lt.margin,
		MaxDeliver:    p.MaxDeliveries,
		MaxAckPending: p.FleetConcurrency,
	}
}
