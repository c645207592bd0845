package levee_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee"
	"github.com/levee-dev/levee/internal/builtin"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// These tests are the failure scenarios of docs/design.md, run through the built-in http kind against a
// downstream that counts calls per Idempotency-Key.

// fastRetry spaces retries by at most 20ms, so only a Retry-After can explain a longer gap.
var fastRetry = levee.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}

// httpKind is the built-in http handler allowed to call the given URL prefixes.
func httpKind(t *testing.T, allow ...string) levee.Handler {
	t.Helper()
	h, err := builtin.NewHTTP(builtin.HTTPConfig{Allow: allow})
	require.NoError(t, err)
	return h
}

// charge is an http job payload that POSTs body to ds's /charge.
func charge(ds *downstream, body map[string]any) map[string]any {
	return map[string]any{"url": ds.URL + "/charge", "body": body}
}

// Total counts every call the downstream received, whatever the key.
func (d *downstream) Total() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.calls {
		n += c
	}
	return n
}

// Effects counts the effects applied for key (an idempotent provider applies at most one).
func (d *downstream) Effects(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.effects[key]
}

// deliveries is how many times the kind's consumer has delivered messages, redeliveries
// included.
func (b *bundle) deliveries(t *testing.T, kind string) uint64 {
	t.Helper()
	js, err := jetstream.New(leveetest.Conn(t, b.nats))
	require.NoError(t, err)
	names, err := queue.NewNames(b.ns)
	require.NoError(t, err)
	c, err := js.Consumer(context.Background(), names.JobsStream(), names.Consumer(kind))
	require.NoError(t, err)
	info, err := c.Info(context.Background())
	require.NoError(t, err)
	return info.Delivered.Consumer
}

// Scenario 4: the same key published twice (different ids), run at once by two workers: one
// claim wins, one effect; the other job reports it as a duplicate.
func TestSameKeyTwoWorkersOneEffect(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		h := httpKind(t, ds.URL+"/")
		// One job per worker at a time, so each worker takes one of the two; a short lease so
		// the loser's retry comes soon.
		policy := levee.Policy{Concurrency: 1, AckWait: 2 * time.Second, Backoff: fastRetry}
		b.startWorker(t, "charge", h, policy)
		b.startWorker(t, "charge", h, policy)

		key := "order-42-" + b.ns
		p := charge(ds, map[string]any{"amount": 42, "currency": "EUR"})
		r1, err := b.client.Publish(ctx, "charge", p, levee.WithKey(key))
		require.NoError(t, err)
		r2, err := b.client.Publish(ctx, "charge", p, levee.WithKey(key))
		require.NoError(t, err)
		require.NotEqual(t, r1.ID, r2.ID)
		require.Equal(t, key, r1.Key)
		require.Equal(t, key, r2.Key)
		require.False(t, r2.Duplicate, "different ids are not deduplicated by the stream")

		s1 := b.waitFinal(t, r1.ID, 20*time.Second)
		s2 := b.waitFinal(t, r2.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, s1.State)
		require.Equal(t, levee.StateSucceeded, s2.State)
		require.Equal(t, 1, ds.Calls(key), "one downstream call for the key")
		require.Equal(t, 1, ds.Total())

		owner, dup := s1, s2
		if s1.DuplicateOf != "" {
			owner, dup = s2, s1
		}
		require.Empty(t, owner.DuplicateOf, "the job that did the work is nobody's duplicate")
		require.Equal(t, owner.ID, dup.DuplicateOf, "the other job names the one that did the work")
		require.Equal(t, key, dup.Key)
		require.JSONEq(t, string(owner.Result), string(dup.Result), "a duplicate reports the result of the work")
		require.JSONEq(t, `{"status":200,"body":{"charged":true}}`, string(owner.Result))
	})
}

// Scenario 5: the same key with a different payload is dead with key_reused_with_different_payload.
func TestKeyReusedWithDifferentPayload(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		key := "order-7-" + b.ns
		first, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 10}), levee.WithKey(key))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)

		otherPayload := charge(ds, map[string]any{"amount": 99999})
		second, err := b.client.Publish(ctx, "charge", otherPayload, levee.WithKey(key))
		require.NoError(t, err)
		st := b.waitFinal(t, second.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "key_reused_with_different_payload", st.Reason)
		require.Zero(t, st.Attempts, "a job refused for key reuse ran no attempt of its own")
		require.Contains(t, st.LastError, first.ID, "the error names the job that used the key")
		require.Equal(t, 1, ds.Calls(key), "the second payload never reached the downstream")

		e := b.dlqEntry(t, second.ID)
		require.Equal(t, "key_reused_with_different_payload", e.Reason)
		require.Equal(t, "key_reused_with_different_payload", e.Header.Get(queue.HeaderReason))
		require.Equal(t, second.ID, e.ID)
		require.Equal(t, key, e.Key)
		require.Equal(t, "charge", e.Kind)
		want, err := json.Marshal(otherPayload)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(e.Payload))

		again := b.waitFinal(t, first.ID, time.Second)
		require.Equal(t, levee.StateSucceeded, again.State, "the first job is untouched")
		require.Empty(t, again.Reason)
	})
}

// Scenario 7: a permanent 4xx is one attempt, then the DLQ.
func TestPermanent4xxDeadLettersAfterOneAttempt(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ds := newDownstream(t, func(string, int) (int, http.Header) { return http.StatusBadRequest, nil })
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{MaxAttempts: 5, Backoff: fastRetry})

		p := charge(ds, map[string]any{"amount": -1})
		res, err := b.client.Publish(context.Background(), "charge", p)
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "permanent_error", st.Reason)
		require.Equal(t, 1, st.Attempts)
		require.Contains(t, st.LastError, "400")
		require.Equal(t, 1, ds.Calls(res.Key), "a permanent error is never retried")
		require.Zero(t, ds.Effects(res.Key))

		e := b.dlqEntry(t, res.ID)
		require.Equal(t, "permanent_error", e.Reason)
		require.Equal(t, 1, e.Attempts)
		require.Contains(t, e.LastError, "400")
		want, err := json.Marshal(p)
		require.NoError(t, err)
		require.JSONEq(t, string(want), string(e.Payload), "the DLQ keeps the original payload")
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 10*time.Second, 20*time.Millisecond,
			"the dead job left the work stream")
	})
}

// Scenario 8: transient 503s with Retry-After are retried after the delay asked for, and the
// job succeeds once.
func TestTransient503HonoursRetryAfter(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ds := newDownstream(t, func(_ string, call int) (int, http.Header) {
			if call <= 2 {
				return http.StatusServiceUnavailable, http.Header{"Retry-After": {"1"}}
			}
			return http.StatusOK, nil
		})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		res, err := b.client.Publish(context.Background(), "charge", charge(ds, map[string]any{"amount": 5}))
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 3, st.Attempts)
		require.JSONEq(t, `{"status":200,"body":{"charged":true}}`, string(st.Result))
		require.Equal(t, 3, ds.Calls(res.Key))
		require.Equal(t, 1, ds.Effects(res.Key), "one effect")

		times := ds.Times(res.Key)
		require.Len(t, times, 3)
		for i := 1; i < len(times); i++ {
			gap := times[i].Sub(times[i-1])
			require.GreaterOrEqual(t, gap, 900*time.Millisecond,
				"call %d came %s after call %d: Retry-After: 1 was not honoured (the backoff alone is at most 20ms)", i+1, gap, i)
		}
	})
}

// Retryable failures that outlast the attempt budget end dead with max_attempts.
func TestRetryableFailuresExhaustMaxAttempts(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ds := newDownstream(t, func(string, int) (int, http.Header) { return http.StatusInternalServerError, nil })
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{MaxAttempts: 3, Backoff: fastRetry})

		res, err := b.client.Publish(context.Background(), "charge", charge(ds, map[string]any{"amount": 5}))
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_attempts", st.Reason)
		require.Equal(t, 3, st.Attempts)
		require.Contains(t, st.LastError, "500")
		require.Nil(t, st.NextAttempt)
		require.Equal(t, 3, ds.Calls(res.Key))

		e := b.dlqEntry(t, res.ID)
		require.Equal(t, "max_attempts", e.Reason)
		require.Equal(t, 3, e.Attempts)
		require.Contains(t, e.LastError, "500")
	})
}

// A job's own max attempts (Levee-Max-Attempts) overrides the kind's policy.
func TestJobMaxAttemptsOverridesPolicy(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ds := newDownstream(t, func(string, int) (int, http.Header) { return http.StatusBadGateway, nil })
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{MaxAttempts: 5, Backoff: fastRetry})

		res, err := b.client.Publish(context.Background(), "charge", charge(ds, nil), levee.WithMaxAttempts(2))
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_attempts", st.Reason)
		require.Equal(t, 2, st.Attempts)
		require.Equal(t, 2, ds.Calls(res.Key))
	})
}

// The http kind calls only allowlisted URLs (SSRF): anything else is dead at once.
func TestHTTPURLOutsideAllowList(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ds := newDownstream(t, nil)
		outside := newDownstream(t, nil)
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		target := outside.URL + "/charge"
		res, err := b.client.Publish(context.Background(), "charge", map[string]any{"url": target})
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "url_not_allowed", st.Reason)
		require.Contains(t, st.LastError, target)
		require.Equal(t, 1, st.Attempts)
		require.Zero(t, outside.Total())
		require.Zero(t, ds.Total())

		e := b.dlqEntry(t, res.ID)
		require.Equal(t, "url_not_allowed", e.Reason)
	})
}

// A message that cannot be a job (published with plain NATS) is dead-lettered as malformed, and
// the worker goes on working.
func TestMalformedMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		id := "malformed-1"
		m := nats.NewMsg(b.ns + ".jobs.charge." + id)
		m.Data = []byte("not json")
		m.Header.Set("Nats-Msg-Id", id)
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)

		st := b.waitFinal(t, id, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "malformed", st.Reason)
		require.Equal(t, "charge", st.Kind)
		require.Contains(t, st.LastError, "JSON")
		require.Zero(t, st.Attempts, "a malformed job never runs")
		require.Zero(t, ds.Total())

		e := b.dlqEntry(t, id)
		require.Equal(t, "malformed", e.Reason)
		require.JSONEq(t, `"not json"`, string(e.Payload), "the DLQ keeps the message as it was (a JSON string of its bytes, as it is not JSON)")
		require.Equal(t, id, e.ID)
		require.Equal(t, "charge", e.Kind)

		good, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 1}))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, good.ID, 20*time.Second).State)
		require.Equal(t, 1, ds.Calls(good.Key))
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 10*time.Second, 20*time.Millisecond,
			"the malformed message was terminated, not left for redelivery")
	})
}

// A payload over the worker's bound is malformed, even when the publisher allowed it.
func TestOversizePayloadIsMalformed(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		const maxPayload = 200
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry},
			func(c *levee.WorkerConfig) { c.MaxPayload = maxPayload })

		big := charge(ds, map[string]any{"note": strings.Repeat("x", 2*maxPayload)})
		res, err := b.client.Publish(ctx, "charge", big)
		require.NoError(t, err, "the client's bound (1 MiB) allows it")
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "malformed", st.Reason)
		require.Contains(t, st.LastError, "too large")
		require.Zero(t, ds.Total())
		require.Equal(t, "malformed", b.dlqEntry(t, res.ID).Reason)

		small, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 1}))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, small.ID, 20*time.Second).State)
		require.Equal(t, 1, ds.Calls(small.Key))
	})
}

// While a job waits for its next attempt, status shows retrying with the time of that attempt,
// the attempts so far and the last error.
func TestRetryingStatusIsVisible(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var calls atomic.Int32
		b.startWorker(t, "flaky", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			switch job.Attempt {
			case 1:
				return nil, levee.RetryAfter(2*time.Second, errors.New("downstream busy"))
			case 2:
				return nil, errors.New("flaky network")
			}
			return map[string]int{"attempt": job.Attempt}, nil
		}), levee.Policy{Backoff: fastRetry})

		res, err := b.client.Publish(ctx, "flaky", map[string]int{"n": 1})
		require.NoError(t, err)

		var seen *levee.JobStatus
		require.Eventually(t, func() bool {
			st, err := b.client.Status(ctx, res.ID)
			if err != nil || st.State != levee.StateRetrying {
				return false
			}
			seen = st
			return true
		}, 10*time.Second, 20*time.Millisecond, "status never showed retrying")
		require.Equal(t, 1, seen.Attempts)
		require.Contains(t, seen.LastError, "downstream busy")
		require.NotNil(t, seen.NextAttempt)
		require.WithinDuration(t, time.Now().Add(time.Second), *seen.NextAttempt, 2*time.Second,
			"the next attempt is about 2s after the first (Retry-After), not the 20ms backoff")
		require.Nil(t, seen.FinishedAt)

		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 3, st.Attempts)
		require.Contains(t, st.LastError, "flaky network", "the last error stays visible after success")
		require.Nil(t, st.NextAttempt)
		require.JSONEq(t, `{"attempt":3}`, string(st.Result))
		require.EqualValues(t, 3, calls.Load())
	})
}

// Long attempts heartbeat: a job running past AckWait is neither redelivered nor run twice.
func TestHeartbeatKeepsLongAttemptOwned(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var calls atomic.Int32
		started := make(chan struct{}, 1)
		b.startWorker(t, "slow", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			calls.Add(1)
			select {
			case started <- struct{}{}:
			default:
			}
			// Simulated work, 2.5 AckWaits long.
			t := time.NewTimer(2500 * time.Millisecond)
			defer t.Stop()
			select {
			case <-t.C:
				return "done", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}), levee.Policy{AckWait: time.Second, Timeout: 10 * time.Second}, func(c *levee.WorkerConfig) {
			// Its own pool: heartbeats must not queue behind the other tests' queries on the
			// shared one, or InProgress comes late and JetStream redelivers.
			c.Pool, c.DatabaseURL = nil, leveetest.DatabaseURL(t)
		})

		res, err := b.client.Publish(ctx, "slow", nil)
		require.NoError(t, err)
		select {
		case <-started:
		case <-time.After(15 * time.Second):
			t.Fatal("the handler never started")
		}
		st, err := b.client.Status(ctx, res.ID)
		require.NoError(t, err)
		require.Equal(t, levee.StateRunning, st.State)
		require.NotNil(t, st.StartedAt)

		st = b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 1, st.Attempts)
		require.JSONEq(t, `"done"`, string(st.Result))
		require.EqualValues(t, 1, calls.Load(), "the handler ran once")
		require.EqualValues(t, 1, b.deliveries(t, "slow"), "heartbeats kept JetStream from redelivering")
	})
}
