package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

var discard = slog.New(slog.DiscardHandler)

func success(a *attempt, result string) ending {
	return ending{out: idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateSucceeded, Result: []byte(result),
		Attempt: idempotency.AttemptSucceeded}, then: thenAck}
}

// A Postgres blip while an attempt's outcome is committed must not run the job again: the
// commit is retried, the message kept in progress meanwhile, and acked once it applies
// (design rule 30).
func TestSettleRetriesAFailingCommitUntilItApplies(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	var mu sync.Mutex
	fails := 2
	r.ledger.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return nil, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
		}
		return []bool{true}, nil
	}
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.leases.settling(a)
	r.k.settle(context.Background(), a, success(a, `{"ok":true}`), nil, discard)
	acks, naks, terms, _ := m.snapshot()
	require.Equal(t, 1, acks)
	require.Empty(t, naks)
	require.Empty(t, terms)
	require.Len(t, r.ledger.finishCalls(), 3, "two failed tries, then the one that applied")
	require.Contains(t, r.k.leases.keeping(r.clock.Stamp()), a, "kept in progress while the commit was retried")
}

// A commit that finds the fence moved on writes nothing more and acks nothing: another worker
// finishes the job.
func TestSettleLeaseLostBeforeCommit(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) { return []bool{false}, nil }
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.settle(context.Background(), a, success(a, `{}`), nil, discard)
	acks, naks, terms, _ := m.snapshot()
	require.Zero(t, acks)
	require.Empty(t, naks)
	require.Empty(t, terms)
}

// At a hard shutdown, once the attempt's lease no longer holds, a failing commit is tried once
// more and given up; the message is no longer kept in progress, so the job runs again
// elsewhere once its lease lapses.
func TestSettleGivesUpAtHardShutdown(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) { return nil, errors.New("connection refused") }
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.leases.settling(a)
	r.clock.Set(r.clock.Now().Add(r.k.leases.times.held() + time.Second))
	r.hard()
	done := make(chan struct{})
	go func() {
		r.k.settle(context.Background(), a, success(a, `{}`), nil, discard)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("settle kept retrying after the hard shutdown")
	}
	acks, naks, _, _ := m.snapshot()
	require.Zero(t, acks)
	require.Empty(t, naks)
	require.Len(t, r.ledger.finishCalls(), 1)
	require.NotContains(t, r.k.leases.keeping(r.clock.Stamp()), a, "no longer kept in progress")
}

// A hard shutdown does not give up the commit of a handler that returned while its lease still
// holds: a Postgres blip shorter than the lease during a shutdown must not run the job again.
func TestSettleKeepsCommittingAtHardShutdownWhileTheLeaseHolds(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	var mu sync.Mutex
	fails := 3
	r.ledger.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return nil, errors.New("connection refused")
		}
		return []bool{true}, nil
	}
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.leases.settling(a)
	r.hard()
	r.k.settle(context.Background(), a, success(a, `{}`), nil, discard)
	acks, _, _, _ := m.snapshot()
	require.Equal(t, 1, acks)
	require.Len(t, r.ledger.finishCalls(), 4)
}

// A dead outcome is committed, then copied to the DLQ, and only then terminated; a failed
// copy hands the message back for the redelivery to copy again (design rule 32).
func TestSettleDeadLettersAfterTheCommit(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	a, m, _ := r.newAttempt("job-1", 2)
	dead := ending{out: idempotency.Outcome{Lease: a.ledgerLease(), State: idempotency.StateDead,
		Reason: executor.ReasonPermanent, Error: "402 Payment Required"}, then: thenDeadLetter, attempts: 2}
	r.k.settle(context.Background(), a, dead, nil, discard)
	_, naks, terms, _ := m.snapshot()
	require.Empty(t, naks)
	require.Equal(t, []string{executor.ReasonPermanent}, terms)
	require.Len(t, r.queue.copies, 1)
	require.Equal(t, executor.ReasonPermanent, r.queue.copies[0].Reason)
	require.Equal(t, 2, r.queue.copies[0].Attempts)
	require.Equal(t, "402 Payment Required", r.queue.copies[0].LastError)
	require.Equal(t, uint64(7), r.queue.copies[0].SourceSeq)
	require.Len(t, r.ledger.finishCalls(), 1)

	r2 := newRig(t, executor.Policy{})
	r2.queue.copyErr = errors.New("nats: timeout")
	a, m, _ = r2.newAttempt("job-2", 1)
	dead.out.Lease = a.ledgerLease()
	r2.k.settle(context.Background(), a, dead, nil, discard)
	_, naks, terms, _ = m.snapshot()
	require.Equal(t, []time.Duration{claimFailedNak}, naks)
	require.Empty(t, terms, "not terminated without its copy")
}

// An outcome that Postgres refuses is replaced by its substitute and the job is
// dead-lettered with reason unstorable_result, rather than run again (design rule 28).
func TestSettleSubstitutesAnUnstorableOutcome(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.ledger.finishFunc = refuseResults("poison")
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.settle(context.Background(), a, success(a, `{"body":"poison"}`), nil, discard)
	acks, _, terms, _ := m.snapshot()
	require.Zero(t, acks)
	require.Equal(t, []string{executor.ReasonUnstorable}, terms)
	require.Len(t, r.queue.copies, 1)
	require.Contains(t, r.queue.copies[0].LastError, "its effect may have happened")
	calls := r.ledger.finishCalls()
	require.Len(t, calls, 2)
	require.Equal(t, idempotency.StateDead, calls[1][0].State)
	require.Nil(t, calls[1][0].Result)
}

// refuseResults makes Finish fail the whole statement, as Postgres does, when any outcome's
// result contains marker.
func refuseResults(marker string) func([]idempotency.Outcome) ([]bool, error) {
	return func(outs []idempotency.Outcome) ([]bool, error) {
		applied := make([]bool, len(outs))
		for i, o := range outs {
			if strings.Contains(string(o.Result), marker) {
				return nil, fmt.Errorf("finish %d outcomes: %w", len(outs), pgErr("22P05"))
			}
			applied[i] = true
		}
		return applied, nil
	}
}

// One unstorable row never fails its neighbours: the batch is split until the row is alone.
func TestCommitterIsolatesTheUnstorableRow(t *testing.T) {
	t.Parallel()
	fl := &fakeLedger{finishFunc: refuseResults("poison")}
	c := newCommitter(fl, nil, 64)
	outs := make([]idempotency.Outcome, 64)
	for i := range outs {
		outs[i] = idempotency.Outcome{Lease: idempotency.Lease{Kind: "k", Key: fmt.Sprint(i), Fence: 1},
			State: idempotency.StateSucceeded, Result: []byte(`{}`)}
	}
	outs[37].Result = []byte(`{"poison":true}`)
	res := c.write(context.Background(), nil, outs)
	require.Len(t, res, 64)
	for i, r := range res {
		require.NoError(t, r.err, i)
		require.True(t, r.applied, i)
		if i == 37 {
			require.True(t, r.substituted)
			require.Equal(t, executor.ReasonUnstorable, r.stored.Reason)
			continue
		}
		require.False(t, r.substituted, i)
		require.Equal(t, outs[i], r.stored)
	}
	require.LessOrEqual(t, len(fl.finishCalls()), 2*7+2, "a bisection, not a commit per row")
}

// Every outcome handed to the committer is answered, also when it races the committer's close
// (design rule 33): a handler that returns during shutdown must have its outcome written.
func TestCommitterAnswersEveryCommitAroundClose(t *testing.T) {
	t.Parallel()
	for range 200 {
		fl := &fakeLedger{}
		c := newCommitter(fl, nil, 4)
		go c.run()
		var wg sync.WaitGroup
		answered := make(chan commitRes, 20)
		for i := range 20 {
			wg.Go(func() {
				out := idempotency.Outcome{Lease: idempotency.Lease{Kind: "k", Key: fmt.Sprint(i), Fence: 1}, State: idempotency.StateSucceeded}
				answered <- c.finish(context.Background(), out, nil)
			})
		}
		c.close()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of 20 commits never answered", 20-len(answered))
		}
		close(answered)
		for res := range answered {
			require.NoError(t, res.err)
			require.True(t, res.applied)
		}
		n := 0
		for _, call := range fl.finishCalls() {
			n += len(call)
		}
		require.Equal(t, 20, n, "every outcome written once")
	}
}

// A transient failure is answered to every caller of the batch, who retry.
func TestCommitterAnswersAFailureToTheWholeBatch(t *testing.T) {
	t.Parallel()
	fl := &fakeLedger{finishFunc: func(outs []idempotency.Outcome) ([]bool, error) { return nil, pgErr("57P01") }}
	c := newCommitter(fl, nil, 64)
	res := c.write(context.Background(), nil, make([]idempotency.Outcome, 5))
	for _, r := range res {
		require.Error(t, r.err)
		require.False(t, r.substituted)
	}
	require.Len(t, fl.finishCalls(), 1, "not split: the data was not the problem")
}

func TestDecide(t *testing.T) {
	t.Parallel()
	retry := func(err error) executor.Verdict { return executor.Verdict{Class: executor.Retry, Err: err} }
	for _, tc := range []struct {
		name     string
		v        executor.Verdict
		number   int
		fallback string
		failures int // failures recorded by the breaker before (11 open it)
		calls    int // successes recorded besides
		want     then
		state    idempotency.State
		reason   string
		release  bool
	}{
		{name: "success acks", v: executor.Verdict{Class: executor.Succeeded}, number: 1, want: thenAck, state: idempotency.StateSucceeded},
		{name: "lease lost writes nothing", v: executor.Verdict{Class: executor.Abandoned, Err: idempotency.ErrLeaseLost}, number: 1, want: thenNothing},
		{name: "shutdown gives the key back", v: executor.Verdict{Class: executor.Abandoned, Err: errShutdown}, number: 1,
			want: thenNakNow, state: idempotency.StateRetrying, release: true},
		{name: "permanent dies", v: executor.Verdict{Class: executor.Dead, Reason: executor.ReasonPermanent, Err: errors.New("400")}, number: 1,
			want: thenDeadLetter, state: idempotency.StateDead, reason: executor.ReasonPermanent},
		{name: "retry below the budget", v: retry(errors.New("503")), number: 2, want: thenNak, state: idempotency.StateRetrying},
		{name: "retry at the budget dies", v: retry(errors.New("503")), number: 5, want: thenDeadLetter,
			state: idempotency.StateDead, reason: executor.ReasonMaxAttempts},
		{name: "retry at the budget falls back", v: retry(errors.New("503")), number: 5, fallback: "backup", want: thenFallBack,
			state: idempotency.StateDead, reason: executor.ReasonFellBack},
		{name: "an outage spends no attempt", v: retry(errors.New("503")), number: 5, failures: 11, want: thenNak,
			state: idempotency.StateRetrying, release: true},
		{name: "an open breaker gives any attempt back", v: retry(errors.New("503")), number: 2, failures: 11, want: thenNak,
			state: idempotency.StateRetrying, release: true},
		{name: "a failure rate at the threshold before min_calls saves the last attempt", v: retry(errors.New("503")), number: 5,
			failures: 6, want: thenNak, state: idempotency.StateRetrying, release: true},
		{name: "a failure rate at the threshold spends earlier attempts", v: retry(errors.New("503")), number: 2,
			failures: 6, want: thenNak, state: idempotency.StateRetrying},
		{name: "a job whose failures are its own still dies", v: retry(errors.New("503")), number: 5, failures: 5,
			want: thenDeadLetter, state: idempotency.StateDead, reason: executor.ReasonMaxAttempts},
		{name: "a failure rate below the threshold dies", v: retry(errors.New("503")), number: 5, failures: 4, calls: 6,
			want: thenDeadLetter, state: idempotency.StateDead, reason: executor.ReasonMaxAttempts},
		{name: "a 4xx is the job's own even in an outage", v: retry(&executor.StatusError{Code: 429, Err: errors.New("too many requests")}), number: 5, failures: 11,
			want: thenDeadLetter, state: idempotency.StateDead, reason: executor.ReasonMaxAttempts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, executor.Policy{MaxAttempts: 5, Breaker: executor.BreakerConfig{MinCalls: 11, FailureRate: 0.5, Scope: executor.ScopeWorker}})
			r.k.kind.Policy.Fallback = tc.fallback
			for range tc.calls {
				r.k.pipeline.Breaker().Record(false)
			}
			for range tc.failures {
				r.k.pipeline.Breaker().Record(true)
			}
			require.Equal(t, tc.failures >= 11, r.k.pipeline.Breaker().State() == executor.BreakerOpen)
			a, _, _ := r.newAttempt("job-1", tc.number)
			e := r.k.decide(a, tc.v, []byte(`{}`), 5, 0.5)
			require.Equal(t, tc.want, e.then)
			if tc.want == thenNothing {
				return
			}
			require.Equal(t, tc.state, e.out.State)
			require.Equal(t, tc.reason, e.out.Reason)
			require.Equal(t, tc.release, e.out.Release)
			require.Equal(t, a.fence, e.out.Fence)
			if tc.want == thenNak {
				require.Positive(t, e.out.RetryIn)
			}
			if tc.want == thenFallBack {
				require.Equal(t, FallbackID("job-1"), e.out.FallbackTo)
			}
		})
	}
}

// A row refused for any reason but a transient one is isolated too, not only for its data
// (found by review: 0A000 on a SQL_ASCII database failed whole batches).
func TestCommitterIsolatesARowRefusedForAnyPermanentReason(t *testing.T) {
	t.Parallel()
	fl := &fakeLedger{finishFunc: func(outs []idempotency.Outcome) ([]bool, error) {
		applied := make([]bool, len(outs))
		for i, o := range outs {
			if o.Key == "3" && o.State == idempotency.StateSucceeded {
				return nil, pgErr("0A000")
			}
			applied[i] = true
		}
		return applied, nil
	}}
	c := newCommitter(fl, nil, 64)
	outs := make([]idempotency.Outcome, 8)
	for i := range outs {
		outs[i] = idempotency.Outcome{Lease: idempotency.Lease{Kind: "k", Key: fmt.Sprint(i), Fence: 1}, State: idempotency.StateSucceeded}
	}
	for i, r := range c.write(context.Background(), nil, outs) {
		if i == 3 {
			require.True(t, r.substituted)
			continue
		}
		require.NoError(t, r.err)
		require.True(t, r.applied)
		require.False(t, r.substituted)
	}
}

// The committer acks a group's applied successes itself, all of them before it answers anyone,
// so that their acks leave together (design rule 15); an outcome not applied, or replaced by
// its substitute, is never acked.
func TestCommitterAcksTheGroupBeforeAnswering(t *testing.T) {
	t.Parallel()
	fl := &fakeLedger{finishFunc: func(outs []idempotency.Outcome) ([]bool, error) {
		applied := make([]bool, len(outs))
		for i, o := range outs {
			if o.Key == "3" && o.State == idempotency.StateSucceeded {
				return nil, pgErr("22P05") // key 3's result is unstorable: it gets a substitute
			}
			applied[i] = o.Key != "1" // key 1's fence moved on
		}
		return applied, nil
	}}
	c := newCommitter(fl, nil, 64)
	var acked []int
	batch := make([]commitReq, 5)
	for i := range batch {
		batch[i] = commitReq{
			out: idempotency.Outcome{Lease: idempotency.Lease{Kind: "k", Key: fmt.Sprint(i), Fence: 1}, State: idempotency.StateSucceeded},
			res: make(chan commitRes, 1),
		}
		if i == 4 {
			continue // asks for no ack (a failure that is nakked, say)
		}
		batch[i].ack = func() error {
			for j := range batch {
				require.Empty(t, batch[j].res, "key %d acked after key %d was answered", i, j)
			}
			acked = append(acked, i)
			if i == 2 {
				return errors.New("nats: connection closed")
			}
			return nil
		}
	}
	c.flush(batch)
	require.Equal(t, []int{0, 2}, acked, "the applied successes, and only they")
	for i := range batch {
		r := <-batch[i].res
		require.Equal(t, i == 0 || i == 2, r.acked, "key %d", i)
		if i == 2 {
			require.ErrorContains(t, r.ackErr, "connection closed", "a failed ack is told to its attempt, which logs it")
		} else {
			require.NoError(t, r.ackErr)
		}
	}
}

// A success settled after the committer closed (a handler that returned late in a shutdown)
// commits on its own and is acked once, by its settle (found by review).
func TestSettleAfterTheCommitterClosedAcksOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	c := newCommitter(r.ledger, nil, 64)
	go c.run()
	c.close()
	r.k.w = &Worker{cfg: r.k.w.cfg, log: r.k.w.log, gate: r.k.w.gate, committer: c}
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.leases.settling(a)
	require.True(t, r.k.settle(context.Background(), a, success(a, `{}`), nil, discard))
	acks, _, _, _ := m.snapshot()
	require.Equal(t, 1, acks)
	require.Len(t, r.ledger.finishCalls(), 1)
}

// A group commit retried after a transient error (its first try may have landed) is acked
// once, by the committer, and the test hook that can skip acks is asked once (found by review).
func TestRetriedCommitIsAckedOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	var mu sync.Mutex
	fails, skips := 1, 0
	r.ledger.finishFunc = func(outs []idempotency.Outcome) ([]bool, error) {
		mu.Lock()
		defer mu.Unlock()
		if fails > 0 {
			fails--
			return nil, errors.New("read tcp 127.0.0.1:5432: connection reset by peer")
		}
		return []bool{true}, nil
	}
	r.k.w.cfg.Hooks.SkipAck = func(queue.Envelope) bool { mu.Lock(); skips++; mu.Unlock(); return false }
	a, m, _ := r.newAttempt("job-1", 1)
	r.k.leases.settling(a)
	require.True(t, r.k.settle(context.Background(), a, success(a, `{}`), nil, discard))
	acks, _, _, _ := m.snapshot()
	require.Equal(t, 1, acks)
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, 1, skips)
	require.Len(t, r.ledger.finishCalls(), 2, "the commit was tried twice")
}
