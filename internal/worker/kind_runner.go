package worker

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/metrics"
	"github.com/levee-dev/levee/internal/queue"
)

// kindRunner serves one kind. Its parts follow a job through the worker:
//
//	pull_loop.go  admission, pulls, hand-over of pulled groups to claims
//	dispatch.go   one claim statement per group; each job started, settled at once, or dead-lettered
//	attempt.go    one attempt: the handler under the kind's pipeline, and what its verdict means
//	settle.go     the one settle path: commit (with retries), then ack, nak, dead-letter or fall back
//	deadletter.go the one dead-letter path
//	fallback.go   handing jobs to the fallback kind
//	lease.go      the leases of running attempts: extensions, deadlines
//	solo.go       last chances, run alone
//
// Its collaborators sit behind small interfaces (deps.go), so that its rules are tested
// without servers.
type kindRunner struct {
	w        *Worker
	kind     Kind
	pipeline *executor.Pipeline
	puller   *queue.Puller
	ledger   ledgerPort
	queue    queuePort
	leases   *leaseKeeper
	metrics  *metrics.Metrics
	log      *slog.Logger // with the kind

	hardCtx  context.Context // ends attempts still running at the shutdown timeout
	runCtx   context.Context // Run's: ends when the worker stops pulling
	attempts *sync.WaitGroup

	pause pauseGate // an operator's pause (control.go)

	// fleetBreaker is the kind's breaker when it is shared by the fleet, kept current from
	// the breakers bucket (breaker.go); nil for a breaker of this worker's own.
	fleetBreaker *executor.FleetBreaker
	breakers     *fleet.Breakers
}

func newKindRunner(w *Worker, k Kind, pl *executor.Pipeline) *kindRunner {
	log := w.log.With("kind", k.Name)
	return &kindRunner{
		w: w, kind: k, pipeline: pl, ledger: w.cfg.Ledger, queue: w.cfg.Queue, metrics: w.cfg.Metrics, log: log,
		leases: &leaseKeeper{
			times: newLeaseTimes(k.Policy.AckWait), clock: systemClock{}, ledger: w.cfg.Ledger, log: log,
			metrics: w.cfg.Metrics, held: map[*attempt]struct{}{},
		},
	}
}

func (k *kindRunner) logger() *slog.Logger { return k.log }

// errorPause is how long the pull loop waits after a failing pull or claim.
const errorPause = 2 * time.Second

// ledgerTimeout bounds one ledger round trip of the pull loop.
const ledgerTimeout = 10 * time.Second

// claimFailedNak is the redelivery delay for messages pulled while the ledger is unreachable.
const claimFailedNak = 5 * time.Second

// detached is a context for the writes that finish an attempt: not cancelled with the
// attempt (the outcome must be written), but bounded, so a black-holed database cannot hold
// the attempt forever.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
