package worker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// The dispatcher publishes the jobs that wait in the ledger (delayed, transactional and
// periodic ones) when they are due (design rules 42-45). Every worker runs one: there is no
// leader, and the rows' locks (FOR UPDATE SKIP LOCKED) share the work.
const (
	// dispatchBatch is the most due jobs one dispatcher transaction takes and publishes.
	dispatchBatch = 500
	// dispatchPoll is the longest a dispatcher waits between looks at the ledger: the bound on
	// lateness when no notification arrives (LISTEN lost, or a pooler that drops it).
	dispatchPoll = time.Second
	// dispatchRetry is the wait after a pass that published nothing although something was
	// due (held by another dispatcher, or its publish failed), so that the loop does not spin.
	dispatchRetry = 100 * time.Millisecond
	// dispatchPublishTimeout bounds a batch's publish, while its rows are locked.
	dispatchPublishTimeout = 10 * time.Second
	// dispatchWarnEvery spaces the warnings about publishes that failed.
	dispatchWarnEvery = time.Minute
)

// throttle lets a warning through at most once per dispatchWarnEvery. Only the dispatcher's
// loop uses one, so it needs no lock.
type throttle struct{ last time.Time }

// allow reports whether a warning may be logged now, and if so counts it.
func (t *throttle) allow() bool {
	if time.Since(t.last) < dispatchWarnEvery {
		return false
	}
	t.last = time.Now()
	return true
}

// dispatchLoop publishes due jobs until ctx ends. It looks at the ledger when the next job or
// tick is due, at a notification that a job was scheduled (listenDue), and at least every
// dispatchPoll; while nothing is due, a look is one cheap query.
func (w *Worker) dispatchLoop(ctx context.Context, wake <-chan struct{}) {
	var failingSince time.Time // the first failed pass since the last that passed
	var warn throttle
	for ctx.Err() == nil {
		wait, err := w.dispatchPass(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			// One warning when the ledger fails, then one a minute while it keeps failing.
			if failingSince.IsZero() {
				failingSince = time.Now()
			}
			if warn.allow() {
				w.log.Warn("dispatch scheduled jobs; trying again each second (this warning repeats at most once a minute)",
					"err", err, "failing_for", time.Since(failingSince).Round(time.Second))
			}
		case !failingSince.IsZero():
			// Said once for the warning that told of the failure, not after every flap.
			if !warn.last.Before(failingSince) {
				w.log.Info("dispatching scheduled jobs again", "failed_for", time.Since(failingSince).Round(time.Second))
			}
			failingSince = time.Time{}
		}
		if wait <= 0 {
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
			t.Stop()
		case <-t.C:
		}
	}
}

// dispatchPass enqueues the due ticks of periodic jobs and publishes the due jobs, and returns
// how long to wait before the next pass: none after a pass that published (more may be due),
// until the next due time otherwise, at most dispatchPoll.
func (w *Worker) dispatchPass(ctx context.Context) (wait time.Duration, err error) {
	job, periodic, err := w.cfg.Ledger.UntilDue(ctx)
	if err != nil {
		return dispatchPoll, err
	}
	ticked := false
	if periodic.Due() {
		w.tickPeriodic(ctx)
		ticked = true
	}
	if job.Due() || ticked {
		published, err := w.dispatchDue(ctx)
		switch {
		case err != nil:
			return dispatchPoll, err
		case published > 0:
			return 0, nil
		case job.Due():
			return dispatchRetry, nil // held by another dispatcher, or its publish failed
		}
	}
	wait = dispatchPoll
	for _, u := range []idempotency.Until{job, periodic} {
		if u.OK && !u.Due() {
			wait = min(wait, u.D)
		}
	}
	return wait, nil
}

// dispatchDue publishes due jobs, a batch per transaction, while full batches are due. It
// returns how many it published.
func (w *Worker) dispatchDue(ctx context.Context) (published int, err error) {
	for {
		taken, done, err := w.cfg.Ledger.DispatchDue(ctx, dispatchBatch, func(jobs []idempotency.ScheduledJob) []error {
			return w.publishDue(ctx, jobs)
		})
		for _, d := range done {
			w.cfg.Metrics.Dispatch(d.Origin, d.Lateness)
		}
		published += len(done)
		if err != nil || taken < dispatchBatch || len(done) == 0 {
			return published, err
		}
	}
}

// publishDue publishes jobs to their stream, each with its id as the message id, and returns
// each one's error.
func (w *Worker) publishDue(ctx context.Context, jobs []idempotency.ScheduledJob) []error {
	envs := make([]queue.Envelope, len(jobs))
	for i, j := range jobs {
		// Enqueued when due: the job's latency (levee_job_latency_seconds, status) counts from
		// its run_at, and so includes the dispatcher's lateness.
		envs[i] = queue.Envelope{ID: j.ID, Kind: j.Kind, Key: j.Key, Payload: j.Payload, MaxAttempts: j.MaxAttempts, EnqueuedAt: j.RunAt}
	}
	errs := make([]error, len(jobs))
	// The rows stay locked while this waits: a NATS that does not answer must not hold them.
	pctx, cancel := context.WithTimeout(ctx, dispatchPublishTimeout)
	defer cancel()
	results, err := w.cfg.Queue.PublishBatch(pctx, envs, nil)
	failed := 0
	for i := range jobs {
		switch {
		case i < len(results) && results[i].Err != nil:
			errs[i] = results[i].Err
		case i >= len(results) || results[i].Sequence == 0 && err != nil:
			errs[i] = fmt.Errorf("publish job %s: %w", jobs[i].ID, err)
		}
		if errs[i] != nil {
			failed++
		}
	}
	if failed > 0 {
		w.cfg.Metrics.DispatchFailed(failed)
		if w.publishWarn.allow() {
			first := slices.IndexFunc(errs, func(err error) bool { return err != nil })
			w.log.Warn("publish due jobs; they stay in the ledger and are tried again (this warning repeats at most once a minute)",
				"failed", failed, "of", len(jobs), "err", errs[first])
		}
	}
	for i, j := range jobs {
		if errs[i] == nil {
			crashAt(crashAfterDispatch, j.Key, 1) // published, its row not yet deleted
		}
	}
	return errs
}

// listenDue listens on the namespace's due channel and wakes the dispatcher at each
// notification, on a connection of its own taken from the pool; it listens again after an
// error, and wakes the dispatcher then (notifications may have been missed meanwhile).
func (w *Worker) listenDue(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	channel := w.cfg.Ledger.DueChannel()
	for ctx.Err() == nil {
		err := w.listenOnce(ctx, channel, signal)
		if ctx.Err() != nil {
			return
		}
		w.log.Debug("listen for scheduled jobs; polling meanwhile", "err", err)
		signal()
		select {
		case <-ctx.Done():
			return
		case <-time.After(dispatchPoll):
		}
	}
}

func (w *Worker) listenOnce(ctx context.Context, channel string, signal func()) error {
	pc, err := w.cfg.Ledger.Pool().Acquire(ctx)
	if err != nil {
		return err
	}
	conn := pc.Hijack() // the connection is the listener's own, closed here, not the pool's
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	signal() // what was scheduled before the LISTEN took effect
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		signal()
	}
}

// Ticks of periodic jobs (design rule 45).
const (
	// periodicGrace is how late a tick may be enqueued and still count as on time for
	// catch_up skip: a later one was missed (the fleet was down, or Postgres unreachable).
	periodicGrace = time.Minute
	// periodicMaxTicks bounds the missed ticks of one periodic job that catch_up all enqueues
	// in one pass; the rest follow in the next passes.
	periodicMaxTicks = 1000
)

// checkPeriodic refuses, at start, a periodic job whose runs could not be published: a
// payload over this worker's bound or, with the job's headers, over the NATS server's.
func (w *Worker) checkPeriodic() error {
	for _, p := range w.cfg.Periodic {
		p = p.WithDefaults()
		// Headers at their longest: a ULID and a tick with nine digits of fraction.
		longest := time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)
		env, err := queue.NewEnvelope(p.Kind, ulid.Make().String(), leveetype.TickKey(p.Name, longest), p.Payload, 0, w.cfg.Queue.MaxPayload())
		if err == nil {
			env.EnqueuedAt = longest
			err = w.cfg.Queue.Fits(env)
		}
		if err != nil {
			return fmt.Errorf("periodic job %q: %w", p.Name, err)
		}
	}
	return nil
}

// tickPeriodic turns the due ticks of periodic jobs into scheduled rows, which the pass that
// follows publishes.
func (w *Worker) tickPeriodic(ctx context.Context) {
	n, err := w.cfg.Ledger.TickPeriodic(ctx, periodicGrace, periodicMaxTicks)
	if err != nil && ctx.Err() == nil && !errors.Is(err, idempotency.ErrNotScheduled) && w.periodicWarn.allow() {
		w.log.Warn("enqueue periodic ticks (this warning repeats at most once a minute)", "err", err)
	}
	if n > 0 {
		w.log.Debug("enqueued periodic ticks", "count", n)
	}
}
