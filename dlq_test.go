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
	"github.com/levee-dev/levee/admin"
	"github.com/levee-dev/levee/internal/idempotency"
	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
	"github.com/levee-dev/levee/leveetype"
)

// These tests drive the DLQ service layer (Client.DeadJobs, DeadJob, Replay, Purge) against
// real workers; the CLI on top of it is tested in cmd/enqueue.

// waitDeadJob waits for the DLQ copy of job id: a worker commits the dead state first and
// copies the job to the DLQ after, so the ledger can say dead a moment before the copy exists.
func (b *bundle) waitDeadJob(t *testing.T, id string) *leveetype.DeadJob {
	t.Helper()
	var dj *leveetype.DeadJob
	require.Eventually(t, func() bool {
		var err error
		dj, err = b.ops.DeadJobGet(context.Background(), id)
		if err != nil && !errors.Is(err, levee.ErrJobNotFound) {
			require.NoError(t, err)
		}
		return err == nil
	}, 20*time.Second, 20*time.Millisecond, "job %s never reached the DLQ", id)
	return dj
}

// deadJobIDs returns the ids of the dead jobs f selects, oldest first.
func (b *bundle) deadJobIDs(t *testing.T, f admin.DeadJobListParams) []string {
	t.Helper()
	ids := []string{}
	for dj, err := range b.ops.DeadJobList(context.Background(), f) {
		require.NoError(t, err)
		ids = append(ids, dj.ID)
	}
	return ids
}

// mustJSON is v as JSON.
func mustJSON(t *testing.T, v any) string {
	t.Helper()
	raw, err := json.Marshal(v)
	require.NoError(t, err)
	return string(raw)
}

// Every reason a worker gives reaches the DLQ with what is known of the job's death.
func TestDLQReasons(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		start := time.Now()
		const workerID = "dlq-reasons-worker"
		withID := func(c *levee.WorkerConfig) { c.ID = workerID }
		ds := newDownstream(t, func(key string, _ int) (int, http.Header) {
			switch key {
			case "perm-" + b.ns:
				return http.StatusBadRequest, nil
			case "flaky-" + b.ns:
				return http.StatusServiceUnavailable, nil
			}
			return http.StatusOK, nil
		})
		outside := newDownstream(t, nil)
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{MaxAttempts: 5, Backoff: fastRetry}, withID)
		// A worker of "crash" creates its consumer, then leaves: its jobs will be stranded.
		stopCrash := b.startWorker(t, "crash", levee.HandlerFunc(func(context.Context, *levee.Job) (any, error) {
			return nil, nil
		}), levee.Policy{MaxAttempts: 1, MaxDeliveries: 2}, withID)
		require.Eventually(t, func() bool {
			served, err := b.client.KindServed(ctx, "crash")
			return err == nil && served
		}, 20*time.Second, 20*time.Millisecond)
		stopCrash()

		type want struct {
			kind, id, key, payload, errHas string
			attempts                       int
		}
		wants := map[string]want{}

		// permanent_error: a 400.
		p := charge(ds, map[string]any{"amount": -1})
		res, err := b.client.Publish(ctx, "charge", p, levee.WithKey("perm-"+b.ns))
		require.NoError(t, err)
		wants["permanent_error"] = want{kind: "charge", id: res.ID, key: res.Key, payload: mustJSON(t, p), errHas: "400", attempts: 1}

		// max_attempts: 503 twice with a budget of two.
		p = charge(ds, map[string]any{"amount": 2})
		res, err = b.client.Publish(ctx, "charge", p, levee.WithKey("flaky-"+b.ns), levee.WithMaxAttempts(2))
		require.NoError(t, err)
		wants["max_attempts"] = want{kind: "charge", id: res.ID, key: res.Key, payload: mustJSON(t, p), errHas: "503", attempts: 2}

		// key_reused_with_different_payload: a second payload under a key that succeeded.
		first, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 3}), levee.WithKey("reuse-"+b.ns))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)
		p = charge(ds, map[string]any{"amount": 3000})
		res, err = b.client.Publish(ctx, "charge", p, levee.WithKey("reuse-"+b.ns))
		require.NoError(t, err)
		wants["key_reused_with_different_payload"] = want{kind: "charge", id: res.ID, key: res.Key, payload: mustJSON(t, p), errHas: first.ID}

		// malformed: plain NATS, not JSON.
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		m := nats.NewMsg(b.ns + ".jobs.charge.malformed-" + b.ns)
		m.Data = []byte("not json")
		m.Header.Set("Nats-Msg-Id", "malformed-"+b.ns)
		_, err = js.PublishMsg(ctx, m)
		require.NoError(t, err)
		wants["malformed"] = want{kind: "charge", id: "malformed-" + b.ns, key: "malformed-" + b.ns, payload: `"not json"`, errHas: "JSON"}

		// url_not_allowed: outside the allowlist.
		p = map[string]any{"url": outside.URL + "/charge"}
		res, err = b.client.Publish(ctx, "charge", p)
		require.NoError(t, err)
		wants["url_not_allowed"] = want{kind: "charge", id: res.ID, key: res.Key, payload: mustJSON(t, p), errHas: outside.URL, attempts: 1}

		// max_deliveries: every delivery is spent without a claim, as by a worker crashing on it.
		p2 := map[string]int{"n": 1}
		res, err = b.client.Publish(ctx, "crash", p2)
		require.NoError(t, err)
		b.strandJob(t, "crash", res.ID, 2)
		wants["max_deliveries"] = want{kind: "crash", id: res.ID, key: res.ID, payload: mustJSON(t, p2), errHas: "delivered 2 times"}

		for reason, w := range wants {
			dj := b.waitDeadJob(t, w.id)
			end := time.Now()
			require.Equal(t, reason, dj.Reason, w.id)
			require.Equal(t, w.id, dj.ID)
			require.Equal(t, w.key, dj.Key, reason)
			require.Equal(t, w.attempts, dj.Attempts, reason)
			require.Contains(t, dj.LastError, w.errHas, reason)
			require.Equal(t, workerID, dj.Worker, reason)
			require.JSONEq(t, w.payload, string(dj.Payload), reason)
			require.NotZero(t, dj.Sequence, reason)
			// Failure times come from the database clock and the worker's: on one machine.
			require.WithinRange(t, dj.FailedAt, start.Add(-time.Second), end, reason)
			require.WithinRange(t, dj.FirstFailedAt, start.Add(-time.Second), dj.FailedAt.Add(time.Second), reason)
			if reason == "max_attempts" {
				require.True(t, dj.FirstFailedAt.Before(dj.FailedAt), "the first of two failures came before the death")
			}
			require.Equal(t, w.kind, dj.Kind, reason)
			if reason != "malformed" {
				require.NotEmpty(t, dj.Headers[queue.HeaderEnqueuedAt], "the job's own headers are kept")
			}
			require.Equal(t, []string{w.id}, b.deadJobIDs(t, admin.DeadJobListParams{Reason: reason}), "filter by reason")

			st, err := b.client.Status(ctx, w.id)
			require.NoError(t, err)
			require.Equal(t, levee.StateDead, st.State, reason)
			require.Equal(t, reason, st.Reason, "the ledger and the DLQ agree")
		}
		require.Len(t, b.deadJobIDs(t, admin.DeadJobListParams{}), len(wants))
		require.Len(t, b.deadJobIDs(t, admin.DeadJobListParams{Kind: "charge"}), len(wants)-1)
		require.Len(t, b.deadJobIDs(t, admin.DeadJobListParams{Since: start.Add(-time.Second)}), len(wants))
		require.Empty(t, b.deadJobIDs(t, admin.DeadJobListParams{Before: start.Add(-time.Second)}))
		require.Zero(t, outside.Total())
	})
}

// A job whose downstream effect happened although the call failed (the provider applied it,
// then answered 503) is replayed with the same Idempotency-Key, so the provider applies it
// once; the job ends succeeded.
func TestDLQReplayAfterEffectHappened(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var ds *downstream
		ds = newDownstream(t, func(key string, call int) (int, http.Header) {
			if call == 1 {
				ds.effects[key] = 1 // applied, but the answer is lost (respond runs under ds.mu)
				return http.StatusServiceUnavailable, nil
			}
			return http.StatusOK, nil // an idempotent provider: the key was applied already
		})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{MaxAttempts: 1, Backoff: fastRetry})

		res, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 10}), levee.WithKey("pay-"+b.ns))
		require.NoError(t, err)
		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "max_attempts", st.Reason)
		require.Equal(t, 1, ds.Effects(res.Key), "the effect happened")

		dj := b.waitDeadJob(t, res.ID)
		rr, err := b.ops.DeadJobReplay(ctx, *dj, admin.DeadJobReplayParams{})
		require.NoError(t, err)
		require.Equal(t, "dead", rr.KeyState)

		require.Eventually(t, func() bool {
			st, err := b.client.Status(ctx, res.ID)
			return err == nil && st.State == levee.StateSucceeded
		}, 20*time.Second, 20*time.Millisecond)
		require.Equal(t, 2, ds.Calls(res.Key), "the replay called with the job's own key")
		require.Equal(t, 2, ds.Total(), "no call carried another key")
		require.Equal(t, 1, ds.Effects(res.Key), "one effect per key")
		require.Empty(t, b.deadJobIDs(t, admin.DeadJobListParams{}))
	})
}

// A dead job whose key already succeeded (here: dead for key reuse, replayed with the payload
// the key is bound to) is acknowledged as a duplicate and never calls the downstream.
func TestDLQReplayKeySucceededDoesNotCallAgain(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		key := "order-" + b.ns
		p := charge(ds, map[string]any{"amount": 10})
		first, err := b.client.Publish(ctx, "charge", p, levee.WithKey(key))
		require.NoError(t, err)
		require.Equal(t, levee.StateSucceeded, b.waitFinal(t, first.ID, 20*time.Second).State)
		second, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 99}), levee.WithKey(key))
		require.NoError(t, err)
		dj := b.waitDeadJob(t, second.ID)
		require.Equal(t, "key_reused_with_different_payload", dj.Reason)

		_, err = b.ops.DeadJobReplay(ctx, *dj, admin.DeadJobReplayParams{Payload: json.RawMessage(mustJSON(t, p))})
		require.ErrorIs(t, err, admin.ErrPayloadChange)
		dj = b.waitDeadJob(t, second.ID) // a refused replay leaves the job in the DLQ

		rr, err := b.ops.DeadJobReplay(ctx, *dj, admin.DeadJobReplayParams{Payload: json.RawMessage(mustJSON(t, p)), AllowPayloadChange: true})
		require.NoError(t, err)
		require.Equal(t, "succeeded", rr.KeyState)
		var st *levee.JobStatus
		require.Eventually(t, func() bool {
			st, err = b.client.Status(ctx, second.ID)
			return err == nil && st.State == levee.StateSucceeded
		}, 20*time.Second, 20*time.Millisecond)
		require.Equal(t, first.ID, st.DuplicateOf, "acknowledged as a duplicate of the job that did the work")
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 10*time.Second, 20*time.Millisecond)
		require.Equal(t, 1, ds.Calls(key), "the downstream was not called again")
		require.Empty(t, b.deadJobIDs(t, admin.DeadJobListParams{}))
	})
}

// A job that failed permanently is replayed once its cause is fixed: it succeeds on a fresh
// attempt budget and leaves the DLQ.
func TestDLQReplayFixedJob(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var fixed atomic.Bool
		ds := newDownstream(t, func(string, int) (int, http.Header) {
			if fixed.Load() {
				return http.StatusOK, nil
			}
			return http.StatusBadRequest, nil
		})
		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})

		res, err := b.client.Publish(ctx, "charge", charge(ds, map[string]any{"amount": 1}))
		require.NoError(t, err)
		dj := b.waitDeadJob(t, res.ID)
		require.Equal(t, "permanent_error", dj.Reason)
		require.Equal(t, 1, dj.Attempts)

		// Replayed before the fix, it dies again: the replay is a new message, copied again.
		rr, err := b.ops.DeadJobReplay(ctx, *dj, admin.DeadJobReplayParams{})
		require.NoError(t, err)
		require.Equal(t, "dead", rr.KeyState)
		again := b.waitDeadJob(t, res.ID)
		require.Greater(t, again.Sequence, dj.Sequence, "a new DLQ entry")
		require.Equal(t, 1, again.Attempts, "on a fresh budget")
		require.Equal(t, []string{res.ID}, b.deadJobIDs(t, admin.DeadJobListParams{}), "the old entry was removed by the replay")

		fixed.Store(true)
		rr, err = b.ops.DeadJobReplay(ctx, *again, admin.DeadJobReplayParams{})
		require.NoError(t, err)
		require.Equal(t, "dead", rr.KeyState)
		_, err = b.ops.DeadJobGet(ctx, res.ID)
		require.ErrorIs(t, err, levee.ErrJobNotFound, "replay removes the DLQ entry")

		st := b.waitFinal(t, res.ID, 20*time.Second)
		require.Equal(t, levee.StateSucceeded, st.State)
		require.Equal(t, 1, st.Attempts, "a replay starts a fresh attempt budget")
		require.Empty(t, st.Reason)
		require.JSONEq(t, `{"status":200,"body":{"charged":true}}`, string(st.Result))
		require.Equal(t, 3, ds.Calls(res.Key))
		require.Equal(t, 1, ds.Effects(res.Key))
		require.Empty(t, b.deadJobIDs(t, admin.DeadJobListParams{}))
	})
}

// Purge removes exactly what its filter selects.
func TestDLQPurgeByFilter(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		fail := levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			var p struct{ Mode string }
			if err := json.Unmarshal(job.Payload, &p); err != nil {
				return nil, levee.Permanent(err)
			}
			if p.Mode == "perm" {
				return nil, levee.Permanent(errors.New("refused"))
			}
			return nil, errors.New("try later")
		})
		w, err := levee.NewWorker(b.workerConfig(t))
		require.NoError(t, err)
		policy := levee.Policy{MaxAttempts: 1, Backoff: fastRetry}
		require.NoError(t, w.Handle("a", fail, policy))
		require.NoError(t, w.Handle("b", fail, policy))
		run(t, w)

		ids := map[string]string{}
		for _, name := range []string{"a/perm/1", "a/perm/2", "a/retry/1", "b/perm/1", "b/retry/1"} {
			kind, mode := strings.Split(name, "/")[0], strings.Split(name, "/")[1]
			res, err := b.client.Publish(ctx, kind, map[string]string{"mode": mode, "name": name})
			require.NoError(t, err)
			ids[name] = res.ID
		}
		for _, id := range ids {
			b.waitDeadJob(t, id)
		}
		require.Len(t, b.deadJobIDs(t, admin.DeadJobListParams{Reason: "max_attempts"}), 2)

		var doomed []leveetype.DeadJob
		for dj, err := range b.ops.DeadJobList(ctx, admin.DeadJobListParams{Kind: "a", Reason: "permanent_error"}) {
			require.NoError(t, err)
			doomed = append(doomed, dj)
		}
		require.Len(t, doomed, 2)
		for _, dj := range doomed {
			require.NoError(t, b.ops.DeadJobPurge(ctx, dj))
		}

		left := b.deadJobIDs(t, admin.DeadJobListParams{})
		require.ElementsMatch(t, []string{ids["a/retry/1"], ids["b/perm/1"], ids["b/retry/1"]}, left)
		for _, name := range []string{"a/perm/1", "a/perm/2"} {
			_, err := b.ops.DeadJobGet(ctx, ids[name])
			require.ErrorIs(t, err, levee.ErrJobNotFound)
			st, err := b.client.Status(ctx, ids[name])
			require.NoError(t, err)
			require.Equal(t, levee.StateDead, st.State, "purge leaves the ledger alone")
		}
	})
}

// A worker killed between committing a job dead and copying it to the DLQ leaves a message
// whose ledger says dead and whose copy is missing. Its next delivery copies it, once; later
// deliveries find the copy and add none.
//
// The kill is simulated before any worker runs: the job's key is claimed and committed dead
// through the ledger, as the killed worker did, and the message is left in the work stream, as
// its redelivery after AckWait would find it.
func TestDLQMissingCopyDeadLetteredOnce(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		ds := newDownstream(t, nil)
		ledger, err := idempotency.New(idempotency.Config{Pool: leveetest.Pool(t), Schema: b.ns})
		require.NoError(t, err)
		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)

		payload := json.RawMessage(mustJSON(t, charge(ds, map[string]any{"amount": 5})))
		res, err := b.client.Publish(ctx, "charge", payload)
		require.NoError(t, err)
		env, err := queue.NewEnvelope("charge", res.ID, res.Key, payload, 0, 0)
		require.NoError(t, err)
		claims, err := ledger.Claim(ctx, []idempotency.ClaimRequest{{
			JobID: res.ID, Kind: "charge", Key: res.Key, PayloadHash: env.PayloadHash(), Lease: time.Minute,
		}})
		require.NoError(t, err)
		require.Equal(t, idempotency.Claimed, claims[0].Status)
		applied, err := ledger.Finish(ctx, []idempotency.Outcome{{
			Lease: idempotency.Lease{Kind: "charge", Key: res.Key, Fence: claims[0].Fence},
			State: idempotency.StateDead, Reason: "permanent_error", Error: "400 Bad Request (before the kill)",
		}})
		require.NoError(t, err)
		require.Equal(t, []bool{true}, applied)
		_, err = b.ops.DeadJobGet(ctx, res.ID)
		require.ErrorIs(t, err, levee.ErrJobNotFound, "the DLQ copy is missing")

		b.startWorker(t, "charge", httpKind(t, ds.URL+"/"), levee.Policy{Backoff: fastRetry})
		dj := b.waitDeadJob(t, res.ID)
		require.Equal(t, "permanent_error", dj.Reason)
		require.Equal(t, 1, dj.Attempts, "attempts come from the ledger")
		require.Equal(t, "400 Bad Request (before the kill)", dj.LastError)
		require.JSONEq(t, string(payload), string(dj.Payload))
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 10*time.Second, 20*time.Millisecond,
			"the message was terminated")

		// Another delivery of the same job (a new message: the old one is gone) adds no copy.
		require.NoError(t, q.Replay(ctx, env, "redelivery-"+res.ID))
		require.Eventually(t, func() bool { return streamEmpty(t, b) }, 10*time.Second, 20*time.Millisecond)
		require.Equal(t, []string{res.ID}, b.deadJobIDs(t, admin.DeadJobListParams{}), "dead-lettered exactly once")
		require.Zero(t, ds.Total(), "a dead job never runs again")
	})
}

// Copying the same message to the DLQ twice stores it once; a new message of the same job (a
// replay that died again) is a new copy.
func TestDLQCopyDeduplicated(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, b.nats), Namespace: b.ns})
		require.NoError(t, err)
		env, err := queue.NewEnvelope("charge", "twice-"+b.ns, "", []byte(`{"n":1}`), 0, 0)
		require.NoError(t, err)
		info := queue.DeadInfo{Reason: "permanent_error", Attempts: 1, LastError: "400", SourceSeq: 7}
		hdr := q.Names().Msg(env).Header
		for range 2 {
			require.NoError(t, q.DeadLetter(ctx, env, env.Payload, hdr, info))
		}
		require.Equal(t, []string{env.ID}, b.deadJobIDs(t, admin.DeadJobListParams{}), "stored once")

		info.SourceSeq = 8
		require.NoError(t, q.DeadLetter(ctx, env, env.Payload, hdr, info))
		require.Equal(t, []string{env.ID, env.ID}, b.deadJobIDs(t, admin.DeadJobListParams{}), "a new message is a new copy")
	})
}
