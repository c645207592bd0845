package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/levee-dev/levee/internal/leveetest"
	"github.com/levee-dev/levee/internal/queue"
)

// foreignQueue returns a Queue in a fresh namespace on url whose streams are NOT created,
// with a JetStream handle to create them by hand, as `nats stream add` would; everything is
// deleted at cleanup.
func foreignQueue(t *testing.T, url string) (*queue.Queue, jetstream.JetStream, queue.Names) {
	t.Helper()
	nc := leveetest.Conn(t, url)
	q, err := queue.New(queue.Config{Conn: nc, Namespace: leveetest.Namespace(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = q.DeleteStreams(context.Background()) })
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return q, js, q.Names()
}

// problem returns the problem of stream (and consumer) about setting, failing without one.
func problem(t *testing.T, ps []queue.SetupProblem, stream, consumer, setting string) queue.SetupProblem {
	t.Helper()
	for _, p := range ps {
		if p.Stream == stream && p.Consumer == consumer && p.Setting == setting {
			return p
		}
	}
	t.Fatalf("no %q problem of %s %s in %v", setting, stream, consumer, ps)
	return queue.SetupProblem{}
}

// Design rule 34: a work stream created beforehand with limits retention and memory storage
// (as `nats stream add` would make it) refuses the start with one line per problem naming the
// stream, the setting, what Levee needs and the fix; a short duplicate window and fewer
// replicas than asked for are warnings.
func TestCheckSetupForeignStreams(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q, js, names := foreignQueue(t, srv.URL)
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: names.JobsStream(), Subjects: []string{names.JobsSubjects()},
				Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage,
				Discard: jetstream.DiscardOld, MaxMsgs: 1000, Duplicates: 30 * time.Second,
			})
			require.NoError(t, err)
			_, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name: names.DLQStream(), Subjects: []string{names.DLQSubjects()},
				Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage, Discard: jetstream.DiscardNew,
			})
			require.NoError(t, err)

			ps, err := q.CheckSetup(ctx, nil)
			require.NoError(t, err)
			jobs := names.JobsStream()
			storage := problem(t, ps, jobs, "", "storage")
			require.True(t, storage.Fatal)
			require.Equal(t, "stream "+jobs+" has memory storage; Levee needs file storage so that queued jobs survive a NATS restart: recreate it with --storage file (nats stream edit cannot change storage)", storage.Message)
			retention := problem(t, ps, jobs, "", "retention")
			require.True(t, retention.Fatal)
			require.Contains(t, retention.Message, "has limits retention; Levee needs work-queue retention")
			require.Contains(t, retention.Message, "--retention work")
			discard := problem(t, ps, jobs, "", "discard")
			require.True(t, discard.Fatal)
			require.Contains(t, discard.Message, "nats stream edit "+jobs+" --discard new")
			dups := problem(t, ps, jobs, "", "duplicate window")
			require.False(t, dups.Fatal, "a short duplicate window is a warning")
			require.Contains(t, dups.Message, "30s")
			dlqRetention := problem(t, ps, names.DLQStream(), "", "retention")
			require.True(t, dlqRetention.Fatal)
			require.Contains(t, dlqRetention.Message, "Levee needs limits retention")

			err = queue.FatalSetup(ps)
			require.ErrorIs(t, err, queue.ErrSetup)
			require.NotContains(t, err.Error(), "\n")
			require.NotContains(t, err.Error(), "duplicate window", "warnings do not refuse")
			var se *queue.SetupError
			require.True(t, errors.As(err, &se))
			for _, p := range se.Problems {
				require.True(t, p.Fatal)
			}

			// Asking for more replicas than a stream has is a warning.
			q3, err := queue.New(queue.Config{Conn: leveetest.Conn(t, srv.URL), Namespace: names.Namespace(),
				Stream: queue.StreamConfig{Replicas: 3}})
			require.NoError(t, err)
			ps, err = q3.CheckSetup(ctx, nil)
			require.NoError(t, err)
			replicas := problem(t, ps, jobs, "", "replicas")
			require.False(t, replicas.Fatal)
			require.Contains(t, replicas.Message, "fewer than the 3 asked for")
		})
	}
}

// Streams and consumers Levee made itself have no problem.
func TestCheckSetupOwnStreams(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			q := leveetest.Queue(t, srv.URL, leveetest.Namespace(t))
			_, err := q.WatchMaxDeliveries(ctx)
			require.NoError(t, err)
			kind := queue.ConsumerConfig{Kind: "charge", AckWait: 10 * time.Second, MaxDeliver: 7, MaxAckPending: 5}
			_, err = q.EnsureConsumer(ctx, kind)
			require.NoError(t, err)
			_, err = q.OpenStrays(ctx)
			require.NoError(t, err)
			ps, err := q.CheckSetup(ctx, []queue.ConsumerConfig{kind, {Kind: "fresh"}})
			require.NoError(t, err)
			require.Empty(t, ps)
		})
	}
}

// An existing kind consumer that an update cannot make right refuses the start; one whose
// tunables differ is updated to the kind's policy, with a warning naming the old value.
func TestEnsureConsumerForeignConsumers(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			ns := leveetest.Namespace(t)
			q := leveetest.Queue(t, srv.URL, ns)
			names := q.Names()
			js, err := jetstream.New(leveetest.Conn(t, srv.URL))
			require.NoError(t, err)

			// A consumer named like the kind's but filtering more than the kind.
			_, err = js.CreateConsumer(ctx, names.JobsStream(), jetstream.ConsumerConfig{
				Durable: names.Consumer("wide"), FilterSubject: ns + ".jobs.wide.>", AckPolicy: jetstream.AckExplicitPolicy,
			})
			require.NoError(t, err)
			// A push consumer.
			_, err = js.CreatePushConsumer(ctx, names.JobsStream(), jetstream.ConsumerConfig{
				Durable: names.Consumer("pushed"), FilterSubject: names.KindFilter("pushed"),
				AckPolicy: jetstream.AckExplicitPolicy, DeliverSubject: "deliver." + ns,
			})
			require.NoError(t, err)
			// The kind's consumer made by hand, with other tunables.
			_, err = js.CreateConsumer(ctx, names.JobsStream(), jetstream.ConsumerConfig{
				Durable: names.Consumer("tuned"), FilterSubject: names.KindFilter("tuned"), AckPolicy: jetstream.AckExplicitPolicy,
				AckWait: 5 * time.Second, MaxDeliver: 3, BackOff: []time.Duration{time.Second, 2 * time.Second},
				MaxAckPending: 9, MaxWaiting: 77,
			})
			require.NoError(t, err)

			wide := queue.ConsumerConfig{Kind: "wide"}
			pushed := queue.ConsumerConfig{Kind: "pushed"}
			tuned := queue.ConsumerConfig{Kind: "tuned", AckWait: 20 * time.Second, MaxDeliver: 50, MaxAckPending: 100}
			ps, err := q.CheckSetup(ctx, []queue.ConsumerConfig{wide, pushed, tuned})
			require.NoError(t, err)
			filter := problem(t, ps, names.JobsStream(), names.Consumer("wide"), "filter subject")
			require.True(t, filter.Fatal)
			require.Contains(t, filter.Message, "filters "+ns+".jobs.wide.>; Levee needs "+ns+".jobs.wide.*")
			require.Contains(t, filter.Message, "nats consumer rm "+names.JobsStream()+" "+names.Consumer("wide"))
			push := problem(t, ps, names.JobsStream(), names.Consumer("pushed"), "deliver subject")
			require.True(t, push.Fatal)
			require.Contains(t, push.Message, "push consumer")
			for _, setting := range []string{"ack wait", "max deliver", "max ack pending", "backoff"} {
				p := problem(t, ps, names.JobsStream(), names.Consumer("tuned"), setting)
				require.False(t, p.Fatal, "%s is updated, not refused", setting)
			}
			require.Contains(t, problem(t, ps, names.JobsStream(), names.Consumer("tuned"), "ack wait").Message,
				"this worker sets 20s (the lease Postgres keeps")

			_, err = q.EnsureConsumer(ctx, wide)
			require.ErrorIs(t, err, queue.ErrSetup)
			require.Contains(t, err.Error(), "filter")
			_, err = q.EnsureConsumer(ctx, pushed)
			require.ErrorIs(t, err, queue.ErrSetup)

			_, err = q.EnsureConsumer(ctx, tuned)
			require.NoError(t, err, "the tunables are updated; other settings are kept, so the server accepts the update")
			cons, err := js.Consumer(ctx, names.JobsStream(), names.Consumer("tuned"))
			require.NoError(t, err)
			cfg := cons.CachedInfo().Config
			require.Equal(t, 20*time.Second, cfg.AckWait)
			require.Equal(t, 50, cfg.MaxDeliver)
			require.Equal(t, 100, cfg.MaxAckPending)
			require.Empty(t, cfg.BackOff)
			require.Equal(t, 77, cfg.MaxWaiting, "a setting the server cannot update is kept")
			ps, err = q.CheckSetup(ctx, []queue.ConsumerConfig{tuned})
			require.NoError(t, err)
			require.Empty(t, ps, "once updated, nothing differs")
		})
	}
}

// The advisory capture stream made by hand: memory storage refuses, limits retention warns,
// subjects that miss the work stream's advisories refuse.
func TestCheckSetupAdvisoriesStream(t *testing.T) {
	t.Parallel()
	srv := leveetest.PrivateServers(t)[0]
	ctx := context.Background()
	q, js, names := foreignQueue(t, srv.URL)
	adv := strings.ToUpper(names.Namespace()) + "_ADVISORIES"
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: adv, Subjects: []string{"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.OTHER_" + adv + ".*"},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.MemoryStorage,
	})
	require.NoError(t, err)
	ps, err := q.CheckSetup(ctx, nil)
	require.NoError(t, err)
	require.True(t, problem(t, ps, adv, "", "storage").Fatal)
	require.False(t, problem(t, ps, adv, "", "retention").Fatal)
	subjects := problem(t, ps, adv, "", "subjects")
	require.True(t, subjects.Fatal)
	require.Contains(t, subjects.Message, "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+names.JobsStream()+".*")
}

// Workers of one namespace starting together all create the missing streams at once; each must
// end up using the stream the first one made. NATS 2.9 answers a creator that loses the race
// with "subjects overlap with an existing stream" rather than "name already in use" (CI saw a
// worker of TestResilienceBulkheadFleetWide stop on it).
func TestEnsureStreamsConcurrently(t *testing.T) {
	t.Parallel()
	for _, srv := range leveetest.PrivateServers(t) {
		t.Run(srv.Name, func(t *testing.T) {
			t.Parallel()
			for round := 0; round < 5; round++ {
				var qs []*queue.Queue
				ns := leveetest.Namespace(t)
				for range 8 {
					q, err := queue.New(queue.Config{Conn: leveetest.Conn(t, srv.URL), Namespace: ns})
					require.NoError(t, err)
					qs = append(qs, q)
				}
				t.Cleanup(func() { _ = qs[0].DeleteStreams(context.Background()) })
				errs := make(chan error, 2*len(qs))
				for _, q := range qs {
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						defer cancel()
						errs <- q.EnsureStreams(ctx)
						_, err := q.WatchMaxDeliveries(ctx)
						errs <- err
					}()
				}
				for range 2 * len(qs) {
					require.NoError(t, <-errs)
				}
			}
		})
	}
}
