package levee_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/fleet"
	"github.com/levee-dev/levee/internal/leveetest"
)

// An operator deletes the kind's key in <NS>_BREAKERS (nats kv del) while the fleet's breaker
// is open: the workers read it as closed, and `breaker reset` still writes a closed record and
// counts the worker (found by review: they kept the stale open record and asked for trials the
// store never granted, forever).
func TestBreakerKeyDeletedDoesNotStrandTheFleet(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[1])
	ctx := context.Background()
	var failing atomic.Bool
	failing.Store(true)
	h := levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
		if failing.Load() {
			return nil, errors.New("downstream down")
		}
		return "ok", nil
	})
	policy := levee.Policy{Concurrency: 1,
		Breaker: levee.BreakerPolicy{MinCalls: 1, FailureRate: 1, OpenFor: time.Second, HalfOpenCalls: 1}}
	b.startWorker(t, "brk", h, policy, func(c *levee.WorkerConfig) { c.ID = "w1" })
	_, err := b.client.Publish(ctx, "brk", nil)
	require.NoError(t, err)
	b.waitKind(t, "brk", 20*time.Second, func(k admin.KindInfo) bool { return k.Breaker == "open" })

	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	kv, err := js.KeyValue(ctx, strings.ToUpper(b.ns)+"_BREAKERS")
	require.NoError(t, err)
	require.NoError(t, kv.Delete(ctx, "brk"))

	failing.Store(false)
	res, err := b.ops.BreakerReset(ctx, admin.BreakerResetParams{Kind: "brk", By: "ops", Wait: 5 * time.Second})
	require.NoError(t, err)
	assert.Equal(t, 1, res.Acknowledged, "reset after the key was deleted: %+v", res)
	r, err := b.client.Publish(ctx, "brk", nil)
	require.NoError(t, err)
	require.Equal(t, levee.StateSucceeded, b.waitFinal(t, r.ID, 20*time.Second).State)
}

// The downstream is still down when the operator resets: a worker applies the reset (closed,
// gen 2), fails and reopens the fleet's breaker (gen 3) within milliseconds. It applied the
// reset and is counted (found by review). The worker is simulated by its fleet entry so the
// count is deterministic.
func TestBreakerResetAckCountsReopenedWorkers(t *testing.T) {
	t.Parallel()
	b := setup(t, leveetest.Servers(t)[1])
	ctx := context.Background()
	q := leveetest.Queue(t, b.nats, b.ns)
	store, err := fleet.New(q).Breakers(ctx, true)
	require.NoError(t, err)
	_, _, err = store.Update(ctx, "brk", func([]byte, bool) ([]byte, bool, error) {
		return []byte(`{"state":"open","gen":1,"until":"2999-01-01T00:00:00Z"}`), true, nil
	})
	require.NoError(t, err)
	_, err = fleet.New(q).Join(ctx, fleet.Config{WorkerID: "w1", Kinds: []string{"brk"},
		StatusFunc: func(string) fleet.KindStatus {
			return fleet.KindStatus{Breaker: "open", BreakerFleet: true, BreakerGen: 3} // reset (2), then reopened (3)
		}})
	require.NoError(t, err)

	res, err := b.ops.BreakerReset(ctx, admin.BreakerResetParams{Kind: "brk", By: "ops", Wait: time.Second})
	require.NoError(t, err)
	require.Equal(t, uint64(2), res.Gen)
	require.Equal(t, 1, res.Acknowledged, "the worker is at gen 3 > 2: it applied the reset: %+v", res)
}
