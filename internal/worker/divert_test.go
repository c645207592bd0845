package worker

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/executor"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/queue"
)

type claimingLedger struct{ *fakeLedger }

func (l claimingLedger) Claim(_ context.Context, reqs []idempotency.ClaimRequest) ([]idempotency.ClaimResult, error) {
	out := make([]idempotency.ClaimResult, len(reqs))
	for i := range out {
		out[i] = idempotency.ClaimResult{Status: idempotency.Claimed, Fence: 1, Attempts: 1}
	}
	return out, nil
}

// Jobs diverted to the fallback kind (breaker open past fallback_after) are settled beside the
// fallback loop, as attempts are, each registered with the lease keeper at once: a stop during
// a Postgres outage does not wait for their commits' retries inside the loop (found by
// review: a batch of 64 could hold a shutdown for hours).
func TestDivertedCommitsDoNotHoldTheLoop(t *testing.T) {
	t.Parallel()
	r := newRig(t, executor.Policy{})
	r.k.ledger = claimingLedger{r.ledger}
	r.k.kind.Policy.Fallback, r.k.kind.Policy.FallbackAfter = "charge_manual", time.Second
	r.ledger.finishFunc = func([]idempotency.Outcome) ([]bool, error) {
		return nil, errors.New("dial tcp 10.0.0.5:5432: connect: connection refused")
	}
	msgs := make([]*fakeMsg, 3)
	js := make([]*job, 3)
	for i := range js {
		msgs[i] = &fakeMsg{}
		id := fmt.Sprintf("job-%d", i)
		js[i] = &job{msg: msgs[i], env: queue.Envelope{ID: id, Kind: "charge", Key: id, Payload: []byte(`{}`)}, delivered: 1, seq: uint64(i + 1)}
	}
	r.k.w.gate.add(len(js))
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		_, _ = r.k.claimAndDispatch(ctx, js, true, nil)
		close(done)
	}()
	time.Sleep(300 * time.Millisecond)
	stop() // SIGTERM: Run cancels its context and waits for the loops (hardCtx is not cancelled yet)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("the fallback loop is still retrying its first diverted commit 5 s after the stop (patience %s per job, 3 jobs; %d of 3 registered with the lease keeper)",
			r.k.commitPatience(), r.k.leases.count())
	}
	require.Equal(t, 3, r.k.leases.count(), "every diverted job is kept in progress while its commit is retried")
	r.hard() // the shutdown timeout passes: the commits are given up
	r.clock.Set(r.clock.Now().Add(r.k.leases.times.held() + time.Second))
	r.k.attempts.Wait()
	require.Zero(t, r.k.leases.count())
}
