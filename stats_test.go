package levee_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
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
)

// kindStats returns the line of kind in s.
func kindStats(t *testing.T, s *admin.Stats, kind string) admin.KindStats {
	t.Helper()
	i := slices.IndexFunc(s.Kinds, func(k admin.KindStats) bool { return k.Kind == kind })
	require.GreaterOrEqual(t, i, 0, "kind %q in %+v", kind, s.Kinds)
	return s.Kinds[i]
}

// gate is a handler that signals each start and holds every job until released.
type gate struct {
	started chan string
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan string, 16), release: make(chan struct{})}
}

func (g *gate) Handle(ctx context.Context, job *levee.Job) (any, error) {
	g.started <- job.ID
	select {
	case <-g.release:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestStats(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()

		s, err := b.ops.Stats(ctx)
		require.NoError(t, err)
		require.Empty(t, s.Kinds, "a fresh namespace")
		require.Zero(t, s.DLQ.Total)
		require.Empty(t, s.DLQ.ByReason)
		require.False(t, s.ScanCapped)

		// slow holds its one slot: one job running, two waiting behind it.
		g := newGate()
		b.startWorker(t, "slow", levee.HandlerFunc(g.Handle), levee.Policy{Concurrency: 1})
		t.Cleanup(func() { close(g.release) }) // before the worker stops
		b.startWorker(t, "boom", levee.HandlerFunc(func(ctx context.Context, job *levee.Job) (any, error) {
			return nil, levee.Permanent(errors.New("boom"))
		}), levee.Policy{})

		boom, err := b.client.Publish(ctx, "boom", map[string]int{"n": 1})
		require.NoError(t, err)
		require.Equal(t, levee.StateDead, b.waitFinal(t, boom.ID, 20*time.Second).State)
		first, err := b.client.Publish(ctx, "slow", map[string]int{"n": 1})
		require.NoError(t, err)
		select {
		case id := <-g.started:
			require.Equal(t, first.ID, id)
		case <-time.After(20 * time.Second):
			t.Fatal("the slow job did not start")
		}
		for i := range 2 {
			_, err := b.client.Publish(ctx, "slow", map[string]int{"n": i + 2})
			require.NoError(t, err)
		}
		for i := range 3 {
			_, err := b.client.Publish(ctx, "ghost", map[string]int{"n": i})
			require.NoError(t, err)
		}

		before := time.Now()
		s, err = b.ops.Stats(ctx)
		require.NoError(t, err)
		require.WithinDuration(t, before, s.GeneratedAt, 10*time.Second)
		require.Equal(t, []string{"boom", "ghost", "slow"}, kindNames(s))

		slow := kindStats(t, s, "slow")
		require.True(t, slow.Served)
		require.False(t, slow.Orphan())
		require.Equal(t, 1, slow.Consumers)
		require.Equal(t, 1, slow.Workers)
		require.EqualValues(t, 2, slow.Backlog)
		require.Equal(t, 1, slow.InFlight)
		require.Zero(t, slow.Redelivered)
		require.NotNil(t, slow.Running)
		require.EqualValues(t, 1, *slow.Running)
		require.EqualValues(t, 0, *slow.Retrying)
		require.Positive(t, slow.OldestAgeSeconds)
		require.Zero(t, slow.Dead)
		require.Equal(t, "closed", slow.Breaker, "the fleet's breaker, as its live worker reports it")
		require.Equal(t, "fleet", slow.BreakerScope)
		require.Nil(t, slow.BreakerNextTrial)

		ghost := kindStats(t, s, "ghost")
		require.False(t, ghost.Served)
		require.True(t, ghost.Orphan())
		require.Zero(t, ghost.Consumers)
		require.Zero(t, ghost.Workers)
		require.EqualValues(t, 3, ghost.Backlog, "an unserved kind's backlog is its jobs in the stream")
		require.Zero(t, ghost.InFlight)
		require.Empty(t, ghost.Breaker, "no worker, no shared record: unknown")
		require.Empty(t, ghost.BreakerScope)
		require.Positive(t, ghost.OldestAgeSeconds)
		require.LessOrEqual(t, ghost.OldestAgeSeconds, slow.OldestAgeSeconds, "ghost jobs came after the first slow one")
		require.EqualValues(t, 0, *ghost.Running)

		boomStats := kindStats(t, s, "boom")
		require.Equal(t, 1, boomStats.Dead)
		require.Zero(t, boomStats.Backlog)
		require.Zero(t, boomStats.OldestAgeSeconds)
		require.True(t, boomStats.Served)
		require.Equal(t, admin.DLQStats{Total: 1, ByReason: map[string]int{"permanent_error": 1}}, s.DLQ)

		// The JSON form has every key, with null ledger counts without a database.
		raw, err := json.Marshal(s)
		require.NoError(t, err)
		var m map[string]any
		require.NoError(t, json.Unmarshal(raw, &m))
		require.ElementsMatch(t, []string{"kinds", "dlq", "generated_at", "scan_capped", "stray_messages"}, mapKeys(m))
		require.Zero(t, s.StrayMessages)
		line := m["kinds"].([]any)[1].(map[string]any)
		require.ElementsMatch(t, []string{"kind", "backlog", "in_flight", "redelivered", "retrying", "running", "scheduled", "dead",
			"oldest_age_seconds", "consumers", "workers", "served",
			"breaker", "breaker_scope", "breaker_calls", "breaker_failures", "breaker_failure_rate", "breaker_next_trial",
			"breaker_next_trial_seconds", "breaker_trials", "breaker_trials_ok", "breaker_since", "breaker_reason",
			"breaker_by", "breaker_cut_off", "paused", "paused_by", "paused_at"}, mapKeys(line))
		require.Nil(t, line["breaker_next_trial"], "no open breaker, no next trial")

		noDB, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: b.nats, Namespace: b.ns})
		require.NoError(t, err)
		defer noDB.Close()
		s, err = admin.New(noDB).Stats(ctx)
		require.NoError(t, err)
		require.Nil(t, kindStats(t, s, "slow").Running, "no ledger: no ledger counts")
		require.Nil(t, kindStats(t, s, "slow").Retrying)
		require.EqualValues(t, 3, kindStats(t, s, "ghost").Backlog, "the queue's counts need only NATS")
		raw, err = json.Marshal(kindStats(t, s, "ghost"))
		require.NoError(t, err)
		require.Contains(t, string(raw), `"retrying":null`)
	})
}

func TestStatsWithoutStreams(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: b.nats, Namespace: leveetest.Namespace(t)})
		require.NoError(t, err)
		defer c.Close()
		s, err := admin.New(c).Stats(context.Background())
		require.NoError(t, err, "missing streams count as empty")
		require.Empty(t, s.Kinds)
		require.Zero(t, s.DLQ.Total)
	})
}

func kindNames(s *admin.Stats) []string {
	var names []string
	for _, k := range s.Kinds {
		names = append(names, k.Kind)
	}
	return names
}

func mapKeys(m map[string]any) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}

func TestCaptureOrphans(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		var ids []string
		for i := range 3 {
			r, err := b.client.Publish(ctx, "ghost", map[string]int{"n": i})
			require.NoError(t, err)
			ids = append(ids, r.ID)
		}
		// A message that is not a valid job (its payload is not JSON) is captured as malformed.
		js, err := jetstream.New(leveetest.Conn(t, b.nats))
		require.NoError(t, err)
		names, err := queue.NewNames(b.ns)
		require.NoError(t, err)
		_, err = js.PublishMsg(ctx, &nats.Msg{Subject: names.JobSubject("ghost", "bad1"), Data: []byte("{not json")})
		require.NoError(t, err)
		// Another orphan kind stays where it is.
		other, err := b.client.Publish(ctx, "other", map[string]int{"n": 1})
		require.NoError(t, err)

		var seen []string
		n, err := b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "ghost", OnJob: func(id string) { seen = append(seen, id) }})
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.Equal(t, append(slices.Clone(ids), "bad1"), seen, "oldest first")

		reasons := map[string]string{}
		for dj, err := range b.ops.DeadJobList(ctx, admin.DeadJobListParams{Kind: "ghost"}) {
			require.NoError(t, err)
			reasons[dj.ID] = dj.Reason
			require.Equal(t, "enqueue", dj.Worker)
		}
		require.Equal(t, map[string]string{ids[0]: "no_handler", ids[1]: "no_handler", ids[2]: "no_handler", "bad1": "malformed"}, reasons)
		for _, id := range ids {
			st, err := b.client.Status(ctx, id)
			require.NoError(t, err)
			require.Equal(t, levee.StateDead, st.State, id)
			require.Equal(t, "no_handler", st.Reason)
			require.Contains(t, st.LastError, `no worker serves kind "ghost"`)
		}
		st, err := b.client.Status(ctx, "bad1")
		require.NoError(t, err)
		require.Equal(t, levee.StateDead, st.State)
		require.Equal(t, "malformed", st.Reason)

		s, err := b.ops.Stats(ctx)
		require.NoError(t, err)
		ghost := kindStats(t, s, "ghost")
		require.Zero(t, ghost.Backlog, "the work stream no longer holds them")
		require.Zero(t, ghost.OldestAgeSeconds)
		require.Equal(t, 4, ghost.Dead)
		require.EqualValues(t, 1, kindStats(t, s, "other").Backlog)
		require.Equal(t, levee.StateQueued, mustStatus(t, b, other.ID).State)
		require.Equal(t, map[string]int{"no_handler": 3, "malformed": 1}, s.DLQ.ByReason)
		consumers := consumerNames(t, js, names.JobsStream())
		require.Empty(t, consumers, "the capture's consumer is gone")

		// Running it again finds nothing; a limit takes the oldest.
		n, err = b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "ghost"})
		require.NoError(t, err)
		require.Zero(t, n)
		for i := range 3 {
			_, err := b.client.Publish(ctx, "ghost", map[string]int{"n": 10 + i})
			require.NoError(t, err)
		}
		n, err = b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "ghost", Limit: 2})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		s, err = b.ops.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 1, kindStats(t, s, "ghost").Backlog)
	})
}

func mustStatus(t *testing.T, b *bundle, id string) *levee.JobStatus {
	t.Helper()
	st, err := b.client.Status(context.Background(), id)
	require.NoError(t, err)
	return st
}

func consumerNames(t *testing.T, js jetstream.JetStream, stream string) []string {
	t.Helper()
	st, err := js.Stream(context.Background(), stream)
	require.NoError(t, err)
	list := st.ConsumerNames(context.Background())
	var names []string
	for n := range list.Name() {
		names = append(names, n)
	}
	require.NoError(t, list.Err())
	return names
}

func TestCaptureOrphansRefusesServedKind(t *testing.T) {
	t.Parallel()
	eachServer(t, func(t *testing.T, b *bundle) {
		ctx := context.Background()
		g := newGate()
		stopServed := b.startWorker(t, "served", levee.HandlerFunc(g.Handle), levee.Policy{Concurrency: 1})
		_, err := b.client.Publish(ctx, "served", map[string]int{"n": 0})
		require.NoError(t, err)
		<-g.started

		n, err := b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "served"})
		require.ErrorIs(t, err, admin.ErrKindServed)
		require.Contains(t, err.Error(), "1 live worker serves it")
		require.Zero(t, n)
		close(g.release)
		stopServed()

		// Its workers are gone, but its consumer remains: still refused without force; with
		// force the capture reads through that consumer.
		for i := range 2 {
			_, err := b.client.Publish(ctx, "served", map[string]int{"n": i + 1})
			require.NoError(t, err)
		}
		_, err = b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "served"})
		require.ErrorIs(t, err, admin.ErrKindServed)
		require.Contains(t, err.Error(), "durable consumer exists")
		n, err = b.ops.OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "served", Force: true})
		require.NoError(t, err)
		require.Equal(t, 2, n)
		s, err := b.ops.Stats(ctx)
		require.NoError(t, err)
		served := kindStats(t, s, "served")
		require.Zero(t, served.Backlog)
		require.Zero(t, served.InFlight)
		require.Equal(t, 2, served.Dead)
		require.Zero(t, served.Workers)
		require.True(t, served.Served, "the kind's consumer is left in place")

		noDB, err := levee.NewClient(ctx, levee.ClientConfig{NATSURL: b.nats, Namespace: b.ns})
		require.NoError(t, err)
		defer noDB.Close()
		_, err = admin.New(noDB).OrphanCapture(ctx, admin.OrphanCaptureParams{Kind: "ghost"})
		require.ErrorIs(t, err, admin.ErrDatabaseRequired)
	})
}

func TestCaptureOrphansNeedsMigratedLedger(t *testing.T) {
	t.Parallel()
	url := leveetest.NATSURL(t)
	ns := leveetest.Namespace(t) // streams, but no ledger schema: no worker ever ran here
	leveetest.Queue(t, url, ns)
	c, err := levee.NewClient(context.Background(), levee.ClientConfig{NATSURL: url, Pool: leveetest.Pool(t), Namespace: ns})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Publish(context.Background(), "ghost", map[string]int{"n": 1})
	require.NoError(t, err)
	_, err = admin.New(c).OrphanCapture(context.Background(), admin.OrphanCaptureParams{Kind: "ghost"})
	require.ErrorIs(t, err, idempotency.ErrNotMigrated)
	require.Contains(t, err.Error(), "worker migrate")
	s, err := admin.New(c).Stats(context.Background())
	require.NoError(t, err, "stats need no migrated ledger")
	require.EqualValues(t, 1, kindStats(t, s, "ghost").Backlog)
	require.EqualValues(t, 0, *kindStats(t, s, "ghost").Retrying)
}
