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
		kinds[i] = queue.ConsumerConfig{Kind: k.kind.Name, AckWait: k.kind.AckWait,
			MaxDeliver: k.kind.MaxDeliver, MaxAckPending: k.kind.MaxAckPending}
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
